#!/usr/bin/env bash
# Install (if needed) and run BARRED on the example health-advice task with the embedded SmolLM2.
# Usage: bash scripts/quickstart.sh [extra `barred generate` flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
barred generate dataset_scripts/health-advice/task.yaml --n 8 --output outputs/health-advice "$@"
