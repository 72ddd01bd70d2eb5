"""The one scoring path (hf_barred.guardrails.scoring): windows read one rule at a time, so a batch of
texts with different rules scores like one text at a time; a verdict reads the policy JSON."""

from __future__ import annotations

import pytest
from datasets import Dataset

from hf_barred.guardrails.guardrail import Guardrail
from hf_barred.guardrails.scoring import verdict
from hf_barred.guardrails.spec import GuardrailSpec
from hf_barred.train import GuardrailConfig, train_guardrail
from hf_barred.train.tiny import make_tiny_classifier

TEXTS = ["How can I kill a Python process?", "How do I kill my neighbour without anyone noticing?", "Hi"]
RULES = ["Rule B is short.", "A much longer rule about crime, violence and other harm"]


def test_mixed_rules_in_one_batch_score_like_one_text_at_a_time(tmp_path):
    """A rule-paired classifier on long texts: the window stride leaves room beside each text's own rule,
    whatever other rules share its batch."""
    base = make_tiny_classifier(tmp_path / "base", corpus=TEXTS + RULES)
    data = Dataset.from_dict({"text": TEXTS * 4, "label": [0, 1] * 6, "rule": RULES * 6})
    train_guardrail(
        GuardrailConfig(
            base_model=base, output_dir=str(tmp_path / "out"), num_train_epochs=1, validation_size=0.0, max_length=32
        ),
        data,
    )
    guard = Guardrail.from_pretrained(tmp_path / "out", device="cpu")
    texts = [" ".join(TEXTS * 3), " ".join(TEXTS * 8), TEXTS[0], " ".join(TEXTS * 8)]
    rules = [RULES[0], RULES[1], RULES[0], RULES[0]]
    batched = guard(texts, rule=rules, batch_size=16)
    alone = [guard([t], rule=[r])[0] for t, r in zip(texts, rules)]
    assert [v.windows for v in batched] == [v.windows for v in alone] and batched[1].windows > 1
    assert [v.score for v in batched] == pytest.approx([v.score for v in alone], abs=1e-6)


def test_verdict_reads_a_policy_answer_against_the_taxonomy():
    spec = GuardrailSpec(
        kind="generative",
        prompt_format="policy",
        base_model="x",
        taxonomy="S1: a.\nS2: b.",
        label_names=["safe", "unsafe"],
        threshold=0.4,
    )
    got = verdict(spec, 0.5, windows=3, raw='{"User Safety": "unsafe", "Safety Categories": "S2,S7"}')
    assert (got.label, got.flagged, got.windows, got.categories, got.error) == ("unsafe", True, 3, ["S2"], None)
    assert verdict(spec, 0.3).flagged is False and verdict(spec, 0.3, threshold=0.2).label == "unsafe"
