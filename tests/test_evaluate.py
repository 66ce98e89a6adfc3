"""`nas-llm evaluate`: lm-eval on the local task files, scored as an independent hand computation, with no network."""
from __future__ import annotations

import json
import math
import os
import socket
from pathlib import Path

import pytest
import torch

from nas_llm.evaluate import perplexities, zeroshot
from nas_llm.evaluate.tasks import ALL_TASKS, TASKS, default_data_dir, parse_tasks, prepare
from test_select import char_tokenizer

DATA = default_data_dir()
# skipped only outside CI: in CI a missing data folder is a failure (the test then fails on the missing file)
needs_data = pytest.mark.skipif(not (DATA / "arc_easy.jsonl").is_file() and not os.environ.get("CI"),
                                reason=f"zero-shot data missing at {DATA}; never skipped in CI")


@pytest.fixture(scope="module")
def tiny_lm():
    from tiny import tiny_model

    model = tiny_model("llama-gqa")
    model.config.max_position_embeddings = 4096
    return model, char_tokenizer()


class NetworkGuard:
    """Raise on any connect to a non-loopback address (and record it), for the duration of a test."""

    def __init__(self, monkeypatch):
        self.attempts: list = []
        real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

        def _check(addr):
            host = addr[0] if isinstance(addr, tuple) else addr
            if isinstance(host, str) and (host.startswith("127.") or host in ("::1", "localhost") or host.startswith("/")):
                return
            if not isinstance(addr, tuple):  # unix socket path
                return
            self.attempts.append(addr)
            raise OSError(f"network access blocked by the test: {addr}")

        def connect(sock, addr):
            _check(addr)
            return real_connect(sock, addr)

        def connect_ex(sock, addr):
            _check(addr)
            return real_connect_ex(sock, addr)

        monkeypatch.setattr(socket.socket, "connect", connect)
        monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
            monkeypatch.setenv(var, "http://127.0.0.1:9")  # a closed port: any HTTP attempt fails fast
        monkeypatch.setenv("NO_PROXY", "")


def test_network_guard_can_fail(monkeypatch):
    guard = NetworkGuard(monkeypatch)
    with pytest.raises(OSError, match="blocked"):
        socket.create_connection(("93.184.216.34", 80), timeout=1)
    assert guard.attempts


def _loglik(model, tok, ctx: str, cont: str) -> float:
    """Sum log p(cont | ctx) by hand (char tokenizer: tokens of ctx+cont = tokens of ctx then of cont)."""
    a, b = tok(ctx)["input_ids"], tok(cont)["input_ids"]
    ids = torch.tensor([a + b])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].double(), -1)
    return float(sum(logp[len(a) + i - 1, t] for i, t in enumerate(b)))


def _read(name: str, n: int) -> list[dict]:
    return [json.loads(x) for x in (DATA / name).read_text().splitlines()[:n]]


@needs_data
def test_zeroshot_matches_hand_scoring_and_makes_no_network_call(tiny_lm, monkeypatch):
    model, tok = tiny_lm
    guard = NetworkGuard(monkeypatch)
    n = 5
    res = zeroshot(model, tok, ["arc_easy", "winogrande", "piqa"], limit=n, batch_size=8)
    assert guard.attempts == []
    # ARC: "{query}\nAnswer:" + " " + choice; acc_norm divides by the choice's character length
    acc = accn = 0
    for d in _read("arc_easy.jsonl", n):
        ll = [_loglik(model, tok, d["query"] + "\nAnswer:", " " + c) for c in d["choices"]]
        acc += int(max(range(len(ll)), key=ll.__getitem__) == d["gold"])
        accn += int(max(range(len(ll)), key=lambda i: ll[i] / len(d["choices"][i])) == d["gold"])
    assert res["arc_easy"]["acc"] == pytest.approx(acc / n) and res["arc_easy"]["acc_norm"] == pytest.approx(accn / n)
    # WinoGrande partial scoring: the same continuation after each context option
    acc = 0
    for d in _read("winogrande.jsonl", n):
        ll = [_loglik(model, tok, c, " " + d["continuation"].strip()) for c in d["context_options"]]
        acc += int(max(range(2), key=ll.__getitem__) == d["gold"])
    assert res["winogrande"]["acc"] == pytest.approx(acc / n)
    # PIQA: labels come from the separate .lst file
    labels = [int(x) for x in (DATA / "piqa_valid-labels.lst").read_text().split()[:n]]
    acc = 0
    for d, lab in zip(_read("piqa_valid.jsonl", n), labels):
        ll = [_loglik(model, tok, f"Question: {d['goal']}\nAnswer:", " " + d[k]) for k in ("sol1", "sol2")]
        acc += int(max(range(2), key=ll.__getitem__) == lab)
    assert res["piqa"]["acc"] == pytest.approx(acc / n)


@needs_data
def test_all_seven_tasks_run(tiny_lm, monkeypatch):
    model, tok = tiny_lm
    guard = NetworkGuard(monkeypatch)
    res = zeroshot(model, tok, "all", limit=3, batch_size=8)
    assert guard.attempts == []
    assert list(res) == ALL_TASKS
    for task, r in res.items():
        assert r["n"] == 3 and 0.0 <= r["acc"] <= 1.0, task
        assert ("acc_norm" in r) == (TASKS[task][2] == "acc_norm")


def test_perplexity_matches_hand_computation(tiny_lm):
    model, tok = tiny_lm
    res = perplexities(model, tok, ["wikitext2-test"], seq_len=32, max_windows=3, batch_size=2)["wikitext2-test"]
    from nas_llm.model.data import eval_windows

    ids = eval_windows(tok, "wikitext2-test", 32, 3)
    nll = 0.0
    with torch.no_grad():
        for w in ids:
            logp = torch.log_softmax(model(w[None]).logits[0].double(), -1)
            nll -= float(logp[torch.arange(31), w[1:]].sum())
    assert res["ppl"] == pytest.approx(math.exp(nll / (3 * 31)), rel=1e-5)
    assert res["windows"] == 3 and res["tokens"] == 93
    with pytest.raises(ValueError, match="exceeds the model's max_position_embeddings 4096"):
        perplexities(model, tok, ["wikitext2-test"], seq_len=5000)


def test_task_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown zero-shot task 'piqa2'.*choose from piqa, arc_easy"):
        parse_tasks("piqa2")
    assert parse_tasks("nasllm_boolq, hellaswag") == ["boolq", "hellaswag"]
    (tmp_path / "data").mkdir()
    with pytest.raises(FileNotFoundError, match=r"needs .*data/boolq.jsonl; pass --data-dir"):
        prepare(tmp_path / "work", data_dir=tmp_path / "data", tasks=["boolq"])


@needs_data
def test_user_data_dir(tiny_lm, tmp_path, monkeypatch):
    """--data-dir: any folder with the same file names is used instead of the shared one."""
    model, tok = tiny_lm
    NetworkGuard(monkeypatch)
    data = tmp_path / "zs"
    data.mkdir()
    rows = _read("boolq.jsonl", 4)
    for r in rows:
        r["gold"] = 1
    (data / "boolq.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    res = zeroshot(model, tok, ["boolq"], data_dir=data)
    yes = sum(_loglik(model, tok, r["query"] + "\nAnswer:", " yes") > _loglik(model, tok, r["query"] + "\nAnswer:", " no") for r in rows)
    assert res["boolq"]["n"] == 4 and res["boolq"]["acc"] == pytest.approx(yes / 4)


def test_cli_needs_out_for_builtin_name():
    from nas_llm.cli import main

    assert main(["evaluate", "smollm2-135m", "--tasks", "none"]) == 2


def test_shared_prefix_lm_equals_hflm(tiny_lm):
    """Grouped-context scoring gives HFLM's log-likelihoods and greedy flags (independent reference:
    lm-eval's own batched full-sequence implementation), including left truncation and 1-token answers."""
    from lm_eval.models.huggingface import HFLM

    from nas_llm.evaluate.shared_prefix_lm import SharedPrefixLM

    model, tok = tiny_lm
    ref = HFLM(pretrained=model, tokenizer=tok, batch_size=3, device="cpu")
    fast = SharedPrefixLM(pretrained=model, tokenizer=tok, batch_size=2, device="cpu")
    reqs = []
    for ctx, conts in [("Question: what is red?\nAnswer:", [" a rose", " the sea", " x", " a very long answer here"]),
                       ("abc", [" d"]), ("the same context", [" y", " n"]), ("q" * 5000, [" truncated", " t"])]:
        for c in conts:
            ce, ke = ref._encode_pair(ctx, c)
            reqs.append(((ctx, c), ce, ke))
    a = ref._loglikelihood_tokens(reqs, disable_tqdm=True)
    b = fast._loglikelihood_tokens(reqs, disable_tqdm=True)
    assert len(a) == len(b) == len(reqs)
    for (la, ga), (lb, gb) in zip(a, b):
        assert lb == pytest.approx(la, rel=1e-4, abs=1e-4) and ga == gb
