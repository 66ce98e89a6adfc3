"""The tokenizer inside a GGUF: copied from the GGUF a model was read from, or built from an HF tokenizer.

llama.cpp tokenises with the ``tokenizer.*`` keys of the file it runs. A model read from a GGUF (the
built-in SmolLM2) keeps that file's keys verbatim: tokens, merges, special ids, pre-tokenizer name and
chat template. Otherwise gguf-py's vocab classes (``BpeVocab``, ``LlamaHfVocab``, ``SpecialVocab``) read
the HF tokenizer as llama.cpp's converter does; what llama.cpp has no tokenizer model for is refused.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from nas_llm.errors import NasLLMError


class GGUFError(NasLLMError, ValueError):
    """A model that cannot be written as a GGUF llama.cpp runs, or a GGUF llama.cpp refused."""


def add_tokenizer(writer: Any, n_vocab: int, tokenizer: Any = None, source_gguf: str | os.PathLike | None = None,
                  tokenizer_pre: str | None = None) -> None:
    """The ``tokenizer.*`` keys for a model with ``n_vocab`` embedding rows: from ``source_gguf`` if given."""
    if source_gguf is not None:
        _copy_tokenizer(writer, source_gguf, n_vocab)
    elif tokenizer is not None:
        _hf_tokenizer(writer, tokenizer, n_vocab, tokenizer_pre)
    else:
        raise GGUFError("a GGUF carries its tokenizer: pass the HF tokenizer, or source_gguf= the GGUF the model came from")


def _copy_tokenizer(writer: Any, source: str | os.PathLike, n_vocab: int) -> None:
    """Every ``tokenizer.*`` key of the GGUF the model was read from (tokens, merges, specials, chat template)."""
    import gguf

    reader = gguf.GGUFReader(str(source))
    tok = reader.fields.get("tokenizer.ggml.tokens")
    if tok is None:
        raise GGUFError(f"{source} has no tokenizer.ggml.tokens; pass the HF tokenizer instead")
    if len(tok.data) != n_vocab:
        raise GGUFError(f"{source} has {len(tok.data)} tokens, the model's embeddings {n_vocab} rows")
    for name, f in reader.fields.items():
        if name.startswith("tokenizer."):
            vtype = f.types[0]
            writer.add_key_value(name, f.contents(), vtype, f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None)


def _bpe_pre(tj: dict) -> str | None:
    """llama.cpp's pre-tokenizer name when the HF pre-tokenizer is plain GPT-2 byte-level; else unknown."""
    pre = tj.get("pre_tokenizer") or {}
    if pre.get("type") == "ByteLevel" and pre.get("use_regex", True):
        return "gpt-2"
    return None


def _hf_tokenizer(writer: Any, tokenizer: Any, n_vocab: int, tokenizer_pre: str | None) -> None:
    """Vocabulary from an HF fast tokenizer through gguf-py's vocab classes (GPT-2 BPE or SentencePiece-BPE)."""
    import gguf

    with tempfile.TemporaryDirectory() as d:
        tokenizer.save_pretrained(d)
        tj_file = Path(d) / "tokenizer.json"
        if not tj_file.is_file():
            raise GGUFError("the tokenizer has no tokenizer.json (a slow tokenizer); load it with use_fast=True")
        tj = json.loads(tj_file.read_text())
        model_type = (tj.get("model") or {}).get("type")
        if model_type == "BPE" and (tj["model"].get("byte_fallback") or (tj.get("decoder") or {}).get("type") != "ByteLevel"):
            vocab, kind = gguf.vocab.LlamaHfVocab(Path(d)), "llama"
        elif model_type == "BPE":
            vocab, kind = gguf.vocab.BpeVocab(Path(d)), "gpt2"
            tokenizer_pre = tokenizer_pre or _bpe_pre(tj)
            if tokenizer_pre is None:
                raise GGUFError("cannot tell which llama.cpp pre-tokenizer matches this BPE tokenizer; pass "
                                "tokenizer_pre=NAME (CLI: --tokenizer-pre), the tokenizer.ggml.pre llama.cpp's "
                                "convert_hf_to_gguf.py writes for the model, e.g. llama-bpe, qwen2, smollm, gpt-2")
        else:
            raise GGUFError(f"llama.cpp has no {model_type} tokenizer model; GGUF export converts BPE tokenizers "
                            "(GPT-2 byte-level or SentencePiece-style)")
        texts, scores, types = [], [], []
        for text, score, ttype in vocab.all_tokens():
            if kind == "llama" and ttype == gguf.TokenType.NORMAL:
                # LlamaHfVocab leaves every score at -1000; llama.cpp's SentencePiece tokenizer merges the
                # highest score first, and a SentencePiece BPE orders its pieces by merge: score = -id
                score = -float(len(texts))
            texts.append(text)
            scores.append(score)
            types.append(ttype)
        if len(texts) > n_vocab:
            raise GGUFError(f"the tokenizer has {len(texts)} tokens, the model's embeddings only {n_vocab} rows")
        for i in range(len(texts), n_vocab):  # as llama.cpp's converter pads a vocabulary smaller than the embeddings
            texts.append(f"[PAD{i}]".encode())
            scores.append(-1000.0)
            types.append(gguf.TokenType.UNUSED)
        writer.add_tokenizer_model(kind)
        if kind == "gpt2":
            writer.add_tokenizer_pre(tokenizer_pre)
        writer.add_token_list(texts)
        writer.add_token_scores(scores)
        writer.add_token_types(types)
        gguf.SpecialVocab(Path(d), load_merges=kind == "gpt2", n_vocab=n_vocab).add_to_gguf(writer, quiet=True)


__all__ = ["GGUFError", "add_tokenizer"]
