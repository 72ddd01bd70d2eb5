#!/usr/bin/env bash
# Install (if needed) and run BARRED on the example health-advice task with the embedded SmolLM2.
# Small on purpose: the embedded 135M model on a 2-core CPU demonstrates the pipeline (see README).
# Usage: bash scripts/quickstart.sh [extra `barred generate` flags]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
. .venv/bin/activate
barred generate dataset_scripts/health-advice/task.yaml --n 12 --output outputs/health-advice \
  --max-rounds 3 --max-rows-per-round 16 --max-repairs 0 --engine-batch-size 32 "$@"
