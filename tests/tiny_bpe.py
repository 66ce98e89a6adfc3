"""A GPT-2-style byte-level BPE tokenizer under 128 ids: what llama.cpp can read, sized for the tiny models."""
from __future__ import annotations


def bpe_tokenizer():
    """Printable ASCII + newline as byte-level symbols, two merges, and ``<eos>`` as an added special token."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()  # the 256 byte-level symbols
    byte_to_sym = dict(enumerate(_bytes_to_unicode()))
    assert set(byte_to_sym.values()) == set(alphabet)
    syms = [byte_to_sym[b] for b in [*range(32, 127), 10]]
    merges = [(byte_to_sym[32], "t"), ("h", "e")]
    vocab = {s: i for i, s in enumerate(syms)}
    for a, b in merges:
        vocab[a + b] = len(vocab)
    t = Tokenizer(models.BPE(vocab, merges))
    t.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    t.decoder = decoders.ByteLevel()
    return PreTrainedTokenizerFast(tokenizer_object=t, eos_token="<eos>", pad_token="<eos>")


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte -> printable symbol table, in byte order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    table = dict(zip(bs, cs))
    return [chr(table[b]) for b in range(256)]
