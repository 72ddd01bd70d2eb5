"""What a guardrail is asked to enforce, and the data it is judged on.

- :mod:`.task`: :class:`GuardrailTask`, a rule (criterion), its label names, the kind of input and
  unlabelled seeds;
- :mod:`.taxonomy`: :class:`Taxonomy`, an S-coded policy (S1..Sn), its text form and the one
  S-code parser; deletion, shuffling and re-indexing;
- :mod:`.rules`: :class:`RuleSet`, the named rules a user guards, from a rule-set file, a folder of
  task files, a taxonomy or one task file;
- :mod:`.schemas`: pydantic schemas of the task, taxonomy and rule-set files;
- :mod:`.files`: reading and writing YAML/JSON, and the one-line error of a file that does not fit
  (:class:`TaskFileError`: expected / found / fix);
- :mod:`.data`: labelled data from files, folders or the Hub, and the one label normaliser;
- :mod:`.rows`: policy-conditioned rows (a text judged under a policy), what APT's stages read and write.

This is the bottom layer of the package: it imports nothing else from hf_barred.
"""

from .rules import RuleSet
from .task import GuardrailTask, Seed, TaskFileError
from .taxonomy import Category, Taxonomy

__all__ = ["Category", "GuardrailTask", "RuleSet", "Seed", "TaskFileError", "Taxonomy"]
