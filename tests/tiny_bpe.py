"""Small tokenizers of the two kinds llama.cpp reads (GPT-2 byte-level BPE, SentencePiece-style BPE), for tiny models."""
from __future__ import annotations


def bpe_tokenizer():
    """Printable ASCII + newline as byte-level symbols, two merges, and ``<eos>`` as an added special token."""
    from gguf.vocab import bytes_to_unicode
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    byte_to_sym = bytes_to_unicode()  # GPT-2's byte -> printable symbol table
    syms = [byte_to_sym[b] for b in [*range(32, 127), 10]]
    merges = [(byte_to_sym[32], "t"), ("h", "e")]
    vocab = {s: i for i, s in enumerate(syms)}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    t = Tokenizer(models.BPE(vocab, merges))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<eos>", pad_token="<eos>")


def spm_tokenizer():
    """A SentencePiece-style BPE (byte fallback, ``▁`` for spaces) as Llama-2 / Mistral ship it: 288 ids."""
    from tokenizers import Tokenizer, decoders, models, normalizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"<0x{b:02X}>": 3 + b for b in range(256)}}
    for ch in "▁abcdefghijklmnopqrstuvwxyz":
        vocab[ch] = len(vocab)
    merges = [("h", "e"), ("t", "h"), ("▁", "t"), ("▁t", "he")]  # "he" before "th": merge order matters
    for a, b in merges:
        vocab[a + b] = len(vocab)
    t = Tokenizer(models.BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    t.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    t.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)])
    return PreTrainedTokenizerFast(tokenizer_object=t, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
