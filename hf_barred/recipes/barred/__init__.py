"""BARRED as a recipe: decompose once, then plan, generate, debate and refine until N samples are accepted.

- :mod:`.run`: :func:`run_barred`, the loop;
- :mod:`.config`: :class:`BarredConfig` and :class:`BarredResult`;
- :mod:`.lengths`: answer-length budgets from the seeds' own lengths;
- :mod:`.budget`: what a run has spent (requests, tokens) and how many rows a round plans;
- :mod:`.failures`: stopping a run whose requests fail;
- :mod:`.store`: saved stage outputs, reused when their fingerprint matches;
- :mod:`.output`: the output folder, checked and locked;
- :mod:`.stats`, :mod:`.writer`: the run's statistics and the files it writes.
"""

from .config import BarredConfig, BarredResult
from .run import run_barred

__all__ = ["BarredConfig", "BarredResult", "run_barred"]
