"""A trained guardrail and everything inference shares with training.

- :mod:`.guardrail`: :class:`Guardrail` (load, score, save, push);
- :mod:`.scoring`: the one scoring path (windows, padding, forward pass, score, threshold -> :class:`Verdict`),
  shared by :class:`Guardrail` and ``barred serve``;
- :mod:`.spec`: ``guardrail_config.json``, what inference needs to know of a saved guardrail;
- :mod:`.formats`: the classification conversations (the paper's A.4,
  ``binary``, ``policy``);
- :mod:`.encoding`: inputs as token ids, the same at training and inference, and long-input windows;
- :mod:`.columns`: labelled data brought to the canonical columns;
- :mod:`.loading`: base models (``"embedded"``) and saved weights for inference;
- :mod:`.remote`: :class:`RemoteGuardrail`, a guardrail served by ``barred serve``, used like a local one.
"""

from .guardrail import Guardrail
from .scoring import Verdict

__all__ = ["Guardrail", "Verdict"]
