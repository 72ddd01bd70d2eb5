"""Build barred/<this folder's name>: see dataset_scripts/build.py (`--help` for the options)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from build import build  # noqa: E402

if __name__ == "__main__":
    sys.exit(build(Path(__file__).resolve().parent))
