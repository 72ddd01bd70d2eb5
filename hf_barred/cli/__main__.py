"""``python -m hf_barred.cli``: the ``barred`` command (what ``accelerate launch -m`` and ``torchrun -m`` run)."""

import sys

from .main import main

sys.exit(main())
