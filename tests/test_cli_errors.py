"""The CLI's error contract: our errors and the OS's print one line and exit 2; bugs keep their traceback;
``--debug`` (before or after the subcommand) shows the traceback for everything.

Each case runs ``nas_llm.cli.main`` in-process on a real fault (a missing GPU, a truncated file, a
user predictor returning a string...), not on a hand-raised exception."""
from __future__ import annotations

import errno
import json

import numpy as np
import pytest
import torch

from nas_llm.errors import ConfigError, ModelFileError, NasLLMError, ObjectiveTypeError, ObjectiveValueError
from search_spaces import SubnetError
from tiny import tiny_model


def run_cli(argv, capsys) -> tuple[int, str]:
    from nas_llm.cli import main

    rc = main(argv)
    return rc, capsys.readouterr().err


def assert_one_line(err: str, command: str, *words: str) -> None:
    """The error is the last line of stderr, the only one from nas-llm (progress bars may precede it)."""
    lines = err.replace("\r", "\n").strip().splitlines()
    assert lines and lines[-1].startswith(f"nas-llm {command}: error: "), err
    assert sum(line.startswith("nas-llm") for line in lines) == 1 and "Traceback" not in err, err
    for w in words:
        assert w in lines[-1], (w, err)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A tiny LLaMA saved as a local HF folder with a word-level tokenizer."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    d = tmp_path_factory.mktemp("m") / "tiny"
    tiny_model("llama-gqa").save_pretrained(d)
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]")))
    tok.save_pretrained(d)
    return d


FAST = ["--seq-len", "8", "--rounds", "1", "--min-run-time", "0.01", "--granularity", "32"]


def test_project_errors_derive_from_the_base_and_the_builtin_callers_catch():
    assert issubclass(SubnetError, NasLLMError) and issubclass(SubnetError, ValueError)
    assert issubclass(ObjectiveTypeError, TypeError) and issubclass(ObjectiveValueError, ValueError)
    from nas_llm.model.export import ExportError

    assert issubclass(ExportError, NasLLMError) and issubclass(ModelFileError, NasLLMError)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_a_gpu_is_one_line(capsys):
    from nas_llm import load_model

    with pytest.raises(ConfigError, match="no CUDA GPU"):  # before any loading
        load_model("no/such-model", device="cuda")
    rc, err = run_cli(["latency", "measure", "--device", "cuda"], capsys)
    assert rc == 2
    assert_one_line(err, "latency", "no CUDA GPU", "--device cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_shows_the_traceback(where, capsys):
    argv = ["latency", "measure", "--device", "cuda"]
    argv = ["--debug", *argv] if where == "before" else [*argv, "--debug"]
    from nas_llm.cli import main

    with pytest.raises(ConfigError, match="no CUDA GPU"):
        main(argv)


def test_a_bug_is_not_hidden(monkeypatch, model_dir):
    """Anything that is not ours or the OS's propagates (the interpreter prints its traceback)."""
    import nas_llm.cli.latency as lat

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(lat, "main", broken)
    from nas_llm.cli import main

    with pytest.raises(ZeroDivisionError):
        main(["latency", "measure", "--model", str(model_dir)])


@pytest.mark.parametrize("code, hint", [(errno.ENOSPC, "disk is full"), (errno.EROFS, "read-only")])
def test_full_or_read_only_disk_is_one_line_and_leaves_nothing(model_dir, tmp_path, monkeypatch, capsys, code, hint):
    import os
    import tempfile

    import nas_llm.model.atomic as atomic

    class Disk:  # the file system refuses new files, as a full or read-only one does
        @staticmethod
        def mkstemp(*a, **k):
            raise OSError(code, os.strerror(code), str(tmp_path / "out"))

        mkdtemp = mkstemp
        gettempdir = staticmethod(tempfile.gettempdir)

    monkeypatch.setattr(atomic, "tempfile", Disk)
    out = tmp_path / "out" / "lat.json"
    rc, err = run_cli(["latency", "measure", "--model", str(model_dir), *FAST, "--json", str(out)], capsys)
    assert rc == 2
    assert_one_line(err, "latency", os.strerror(code), hint)
    assert not out.exists()


def test_missing_model_file_is_one_line(tmp_path, capsys):
    rc, err = run_cli(["latency", "measure", "--model", str(tmp_path / "nope.gguf")], capsys)
    assert rc == 2
    assert_one_line(err, "latency", "GGUF file not found", "nope.gguf")


def test_truncated_export_weights_are_one_line(model_dir, tmp_path, capsys):
    """The project's own ExportError (a corrupt safetensors file) reaches the user as one line."""
    from nas_llm import Ranking, SubnetSpace, export, slice_model
    from nas_llm.model.loading import load_model

    m, _ = load_model(str(model_dir))
    sp = SubnetSpace.from_model(m, granularity=32)
    d = sp.dims
    out = export(slice_model(m, Ranking.identity(d.num_layers, d.num_kv_heads, d.intermediate).resolve(sp.uniform(2, 64))),
                 tmp_path / "sub")
    w = out / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    rc, err = run_cli(["latency", "measure", "--model", str(out)], capsys)
    assert rc == 2
    assert_one_line(err, "latency", "corrupt weight file", "model.safetensors")


def write_gguf(path) -> int:
    """A small valid GGUF file (gguf-py's writer); returns its size."""
    from gguf import GGUFWriter

    w = GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.ones((64, 32), dtype=np.float32))
    w.add_tensor("output.weight", np.ones((64, 32), dtype=np.float16))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path.stat().st_size


def test_truncated_gguf_names_expected_and_actual_size(tmp_path, capsys):
    from nas_llm.model.loading import check_gguf, gguf_size

    full = tmp_path / "full.gguf"
    size = write_gguf(full)
    # independent reference: the data section ends with the last tensor: 64*32 float32 + 64*32 float16 bytes
    assert gguf_size(full) == size and size > 64 * 32 * 6
    check_gguf(full)  # a whole file passes
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(full.read_bytes()[: size - 1000])
    rc, err = run_cli(["latency", "measure", "--model", str(cut)], capsys)
    assert rc == 2
    assert_one_line(err, "latency", "truncated", f"describes {size} bytes", f"has {size - 1000}")
    head = tmp_path / "head.gguf"
    head.write_bytes(full.read_bytes()[:40])
    with pytest.raises(ModelFileError, match="header cannot be read .*40 bytes"):
        check_gguf(head)


def test_unsupported_architecture_is_one_line(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=10)).save_pretrained(tmp_path / "gpt2")
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"a": 0, "[UNK]": 1}, unk_token="[UNK]"))
                            ).save_pretrained(tmp_path / "gpt2")
    rc, err = run_cli(["latency", "measure", "--model", str(tmp_path / "gpt2")], capsys)
    assert rc == 2
    assert_one_line(err, "latency", "unsupported architecture", "LlamaForCausalLM")


def returns_a_string(subnet):
    return "fast"


def returns_nan(subnet):
    return float("nan")


@pytest.mark.parametrize("fn, words", [("returns_a_string", ["returned 'fast'", "float"]), ("returns_nan", ["returned nan"])])
def test_user_predictor_returning_garbage_is_one_line_before_timing(model_dir, capsys, fn, words):
    rc, err = run_cli(["latency", "validate", "--model", str(model_dir), *FAST, "--n", "3",
                       "--predictors", f"{__name__}:{fn}"], capsys)
    assert rc == 2
    assert_one_line(err, "latency", f"latency predictor {fn!r}", *words)


def test_bad_subnet_is_one_line(model_dir, capsys):
    bad = json.dumps({"kv_groups": [9, 9, 9, 9], "neurons": [96] * 4, "keep": [True] * 4})
    rc, err = run_cli(["latency", "measure", "--model", str(model_dir), *FAST, "--subnet", bad], capsys)
    assert rc == 2
    assert_one_line(err, "latency", "layer 0", "[1, 3]")


def test_unknown_plugin_path_is_one_line(model_dir, capsys):
    rc, err = run_cli(["latency", "validate", "--model", str(model_dir), *FAST, "--predictors", f"{__name__}:nope"], capsys)
    assert rc == 2
    assert_one_line(err, "latency", "no attribute 'nope'")


@pytest.mark.parametrize("sub", ["demo", "search", "reform", "report", "select", "export", "evaluate", "latency"])
def test_every_subcommand_help_ends_with_examples(sub, capsys):
    from nas_llm.cli import main

    with pytest.raises(SystemExit) as e:
        main([sub, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and f"nas-llm {sub}" in out.split("examples:")[1]
