#!/usr/bin/env bash
# Install (if needed) and run the default test suite (fast; slow/vllm/browser tests are opt-in).
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
python -m pytest "$@"
# Tests marked `isolated` in a fresh pytest process: the Ctrl-C test's child hangs at exit when the test
# runs inside the full suite's process (cause not found yet; it passes alone and in its own module).
python -m pytest -m isolated "$@"
