#!/usr/bin/env bash
# Install (if needed) and run the default test suite (fast; slow/vllm/browser tests are opt-in).
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
python -m pytest "$@"
# Not run here: tests marked `isolated` (the Ctrl-C test of the openai engine). After the main suite, even in
# a fresh pytest process, its child hangs at exit (cause not found yet); run it alone:
#   python -m pytest -m isolated tests/llm/engines/openai/test_backend.py
