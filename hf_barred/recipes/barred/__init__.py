"""BARRED as a recipe: per rule, decompose once, then plan, generate, debate and refine until N samples are accepted.

- :mod:`.run`: :func:`run_barred` (one rule) and :func:`run_barred_rules` (a rule set), the entry points;
- :mod:`.rule_run`: one rule's quota, rounds, dispositions, splits and statistics;
- :mod:`.streaming` (the default) and :mod:`.stages_executor`: how rows move through the stages;
  :mod:`.shards`, a streaming run's finished rows; :mod:`.context`, what every rule of a run shares;
- :mod:`.config`: :class:`BarredConfig` and :class:`BarredResult`;
- :mod:`.lengths`: answer-length budgets from the seeds' own lengths;
- :mod:`.budget`: what a run has spent (requests, tokens) and how many rows a round plans;
- :mod:`.failures`: stopping a run whose requests fail;
- :mod:`.store`: saved stage outputs, reused when their fingerprint matches;
- :mod:`.output`: the output folder, checked and locked;
- :mod:`.stats`, :mod:`.writer`: the run's statistics and the files it writes.
"""

from .config import BarredConfig, BarredResult
from .run import run_barred, run_barred_rules
from .writer import RuleSetResult

__all__ = ["BarredConfig", "BarredResult", "RuleSetResult", "run_barred", "run_barred_rules"]
