#!/usr/bin/env bash
# Install (if needed) and run the default test suite (fast; slow/vllm/browser tests are opt-in).
# Usage: bash scripts/test.sh [pytest args...]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
python -m pytest "$@"
