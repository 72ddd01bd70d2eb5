"""Repository-level pytest settings: modules whose optional dependency is absent are not collected
for their doctests (``hf_barred/llm/engines/local/constrained.py`` needs ``xgrammar``, the ``local`` extra)."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("xgrammar") else ["hf_barred/llm/engines/local/constrained.py"]
