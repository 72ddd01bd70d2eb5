"""LoRA classifier guardrails that keep their adapter, trained in seconds: for tests, examples and
``benchmarks/bench_serve.py``.

``barred train`` merges a classifier's LoRA into full weights (so the folder loads with
``transformers.pipeline``); the server shares a base only between adapter folders. This helper
trains with the same model builder as ``barred train`` (:func:`hf_barred.train.modeling.build_model`)
and saves the adapter, the tokenizer and ``guardrail_config.json`` with ``adapter=True``, a folder
that ``Guardrail.from_pretrained`` loads as base + adapter.

Example:
    >>> import tempfile
    >>> from hf_barred.guardrail import Guardrail
    >>> from hf_barred.serve.tiny import make_tiny_lora_classifier
    >>> from hf_barred.train.tiny import make_tiny_classifier
    >>> root = tempfile.mkdtemp()
    >>> base = make_tiny_classifier(root + "/base", corpus=["kill a process", "kill my neighbour"])
    >>> folder = make_tiny_lora_classifier(base, root + "/guard", ["kill a process", "kill my neighbour"], [0, 1])
    >>> 0.0 <= Guardrail.from_pretrained(folder)(["kill a process"])[0].score <= 1.0
    True
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

from ..train.config import GuardrailConfig
from ..train.data import classifier_inputs
from ..train.modeling import build_model
from ..train.spec import GuardrailSpec


def make_tiny_lora_classifier(base_model: str, output_dir: str | Path, texts: Sequence[str], labels: Sequence[int],
                              *, rule: Optional[str] = None, steps: int = 5, learning_rate: float = 5e-3,
                              lora_r: int = 8, seed: int = 0, label_names: Sequence[str] = ("safe", "unsafe")) -> str:
    """Train a LoRA classifier for ``steps`` full-batch steps and save it as an adapter guardrail."""
    import torch

    torch.manual_seed(seed)
    names = list(label_names)
    config = GuardrailConfig(base_model=base_model, rule=rule, output_dir=str(output_dir), lora_r=lora_r,
                             lora_alpha=2 * lora_r, label_names=names, validation_size=0.0)
    model, tokenizer = build_model(config, names)
    batch = classifier_inputs(tokenizer, list(texts), None, config.max_length, padding=True, return_tensors="pt")
    target = torch.tensor(list(labels), dtype=torch.long)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=learning_rate)
    model.train()
    for _ in range(steps):
        loss = model(**batch, labels=target).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    out = Path(output_dir)
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    GuardrailSpec(kind="classifier", prompt_format="binary", base_model=base_model, rule=rule, label_names=names,
                  max_length=config.max_length, adapter=True,
                  training={"config": {"lora_r": lora_r, "steps": steps, "seed": seed}}).save(out)
    return str(out)
