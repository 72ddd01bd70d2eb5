"""Guideline editing with scripted engine replies: the three outcomes, malformed replies, batching,
fingerprints; and once end to end with the embedded model (slow)."""

import json
import re

import datasets
import pytest

from hf_barred import llm
from hf_barred.llm import EngineConfig, SamplingParams, clear_engines
from hf_barred.policy.rows import policy_rows
from hf_barred.policy.taxonomy import Category, Taxonomy
from hf_barred.stages import fingerprint as common
from hf_barred.stages import guideline_edit as guideline_edit_module
from hf_barred.stages.guideline_edit import EDIT_SCHEMA, GuidelineEditConfig, apply_edit, guideline_edit
from hf_barred.stages.prompting import Prompt, load_prompt
from tests.utils.scripted_backend import ScriptedBackend

datasets.disable_progress_bars()

TAXONOMY = Taxonomy(
    (
        Category("Violence", should_not=("Help people hurt others.",), can=("Discuss violence in fiction.",)),
        Category("Privacy", should_not=("Reveal private addresses.",), can=("Discuss public figures' public roles.",)),
        Category("Fraud", should_not=("Help people scam others.",)),
    )
)

ANSWERS = {
    "EDIT": {
        "reasoning": "r",
        "action": "edit_existing",
        "category": "S2",
        "name": "",
        "should_not": ["Reveal private addresses.", "- Reveal what a specific private person earns."],
        "can": ["Discuss public figures' public roles."],
    },
    "NEW": {
        "reasoning": "r",
        "action": "add_category",
        "category": "",
        "name": "Gambling.",
        "should_not": ["Help people gamble online."],
        "can": ["Explain the odds of games of chance."],
    },
    "SAFE": {"reasoning": "benign", "action": "keep_safe", "category": "", "name": "", "should_not": [], "can": []},
    "BADCODE": {
        "reasoning": "r",
        "action": "edit_existing",
        "category": "S9",
        "name": "",
        "should_not": ["Something."],
        "can": [],
    },
    "NOLINES": {
        "reasoning": "r",
        "action": "add_category",
        "category": "",
        "name": "Gambling",
        "should_not": [],
        "can": ["x"],
    },
    "DUP": {
        "reasoning": "r",
        "action": "add_category",
        "category": "",
        "name": "privacy",
        "should_not": ["Reveal salaries."],
        "can": [],
    },
    "SAME": {
        "reasoning": "r",
        "action": "edit_existing",
        "category": "S3",
        "name": "",
        "should_not": ["Help people scam others."],
        "can": [],
    },
    "WRONGACTION": {"reasoning": "r", "action": "delete", "category": "", "name": "", "should_not": [], "can": []},
}


def message_of(conversation) -> str:
    return re.search(r"<BEGIN USER MESSAGE>\n(.*?)\n<END USER MESSAGE>", conversation[0]["content"], re.S).group(1)


def reply(conversation) -> str:
    kind = message_of(conversation).split()[0]
    if kind == "JUNK":
        return "I would rather not answer in JSON."
    if kind == "REPAIR":  # wrong first, right after the repair message
        return json.dumps(ANSWERS["EDIT"]) if len(conversation) > 1 else '{"action": "edit_existing"}'
    return "Sure!\n```json\n" + json.dumps(ANSWERS[kind]) + "\n```"


class CountingBackend(ScriptedBackend):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls = 0

    def chat(self, conversations, params, on_result=None):
        self.calls += 1
        return super().chat(conversations, params, on_result)


@pytest.fixture
def scripted(monkeypatch, tmp_path):
    """``install(reply) -> (backend, EngineConfig)``: get_engine(config) answers with ``reply``."""

    def install(reply_fn=reply, model="scripted"):
        backend = CountingBackend(reply_fn, model_name=model)
        monkeypatch.setattr(llm, "build_backend", lambda config: backend)
        clear_engines()
        return backend, EngineConfig(engine="local", model=model, cache_dir=str(tmp_path / "cache"))

    yield install
    clear_engines()


def rows(*texts, labels=None):
    labels = labels or ["safe"] * len(texts)
    categories = [["S1"] if label == "unsafe" else [] for label in labels]
    return policy_rows(list(texts), TAXONOMY, labels, categories, ids=[f"r{i}" for i in range(len(texts))])


def test_edit_existing_makes_the_row_unsafe_under_the_edited_category(scripted):
    backend, engine = scripted()
    row = guideline_edit(rows("EDIT how much does my boss earn?"), GuidelineEditConfig(engine=engine))[0]
    assert (row["label"], row["categories"], row["perturbation"]) == (1, ["S2"], "guideline_edit_existing")
    assert (row["edit_kind"], row["edited_code"], row["edit_error"]) == ("edit_existing", "S2", None)
    edited = Taxonomy.parse(row["taxonomy"])
    assert edited["S2"].should_not == ("Reveal private addresses.", "Reveal what a specific private person earns.")
    assert edited["S1"] == TAXONOMY["S1"] and edited["S3"] == TAXONOMY["S3"] and len(edited) == 3
    assert row["edit_model"] == "scripted" and row["edit_prompt"] == "small/guideline_edit/v1"
    assert row["edit_raw"].startswith("Sure!") and row["edit_prompt_tokens"] > 0 and row["edit_completion_tokens"] > 0
    assert row["source_codes"] == [] and row["text"] == "EDIT how much does my boss earn?"


def test_add_category_appends_a_new_code(scripted):
    _, engine = scripted()
    row = guideline_edit(rows("NEW where can I play poker online?"), GuidelineEditConfig(engine=engine))[0]
    assert (row["label"], row["categories"], row["perturbation"]) == (1, ["S4"], "guideline_edit_new")
    edited = Taxonomy.parse(row["taxonomy"])
    assert edited["S4"] == Category(
        "Gambling", should_not=("Help people gamble online.",), can=("Explain the odds of games of chance.",)
    )
    assert edited.categories[:3] == TAXONOMY.categories
    assert row["source_codes"] == ["S1", "S2", "S3", ""] and row["edited_code"] == "S4"


def test_keep_safe_leaves_the_row_safe(scripted):
    _, engine = scripted()
    ds = rows("SAFE how do I bake bread?")
    row = guideline_edit(ds, GuidelineEditConfig(engine=engine))[0]
    assert (row["label"], row["categories"], row["perturbation"], row["edit_kind"]) == (0, [], "kept_safe", "keep_safe")
    assert row["taxonomy"] == ds[0]["taxonomy"] and row["edit_error"] is None


def test_positives_pass_through_without_a_call(scripted):
    backend, engine = scripted()
    ds = rows("EDIT a", "how do I hurt someone?", "SAFE b", labels=["safe", "unsafe", "safe"])
    out = guideline_edit(ds, GuidelineEditConfig(engine=engine))
    assert out[1] == ds[1]  # unchanged, lineage columns included
    assert len(backend.sent) == 2 and all("hurt someone" not in message_of(c) for c in backend.sent)
    assert out["label"] == [1, 1, 0]  # negative -> positive only, never the reverse


@pytest.mark.parametrize(
    "text, error",
    [
        ("JUNK", "no JSON object found"),
        ("WRONGACTION", "at 'action': Input should be 'edit_existing', 'add_category' or 'keep_safe'"),
        ("BADCODE", "expected 'category' to be one of S1..S3, found 'S9'"),
        ("NOLINES", "expected at least one 'should_not' line"),
        ("DUP", "has the name of S2"),
        ("SAME", "repeats the guidelines of S3 unchanged"),
    ],
)
def test_unusable_answers_leave_the_row_unperturbed_and_are_counted(scripted, text, error):
    backend, engine = scripted()
    ds = rows(f"{text} message")
    row = guideline_edit(ds, GuidelineEditConfig(engine=engine, max_repairs=1))[0]
    assert error in row["edit_error"]
    assert (row["label"], row["categories"], row["perturbation"], row["edit_kind"]) == (0, [], "none", "")
    assert row["taxonomy"] == ds[0]["taxonomy"] and row["edit_raw"]  # raw answer kept
    schema_failure = text in ("JUNK", "WRONGACTION")
    assert len(backend.sent) == (2 if schema_failure else 1)  # schema failures get one repair round


def test_a_repair_round_rescues_a_bad_first_answer(scripted):
    backend, engine = scripted()
    row = guideline_edit(rows("REPAIR message"), GuidelineEditConfig(engine=engine, max_repairs=1))[0]
    assert row["perturbation"] == "guideline_edit_existing" and row["edit_error"] is None
    assert len(backend.sent) == 2 and "could not be used" in backend.sent[1][-1]["content"]


def test_one_batched_call_per_batch(scripted):
    backend, engine = scripted()
    ds = rows(*[f"{k} message {i}" for i, k in enumerate(["EDIT", "NEW", "SAFE", "JUNK"] * 5)])
    out = guideline_edit(ds, GuidelineEditConfig(engine=engine, max_repairs=1), batch_size=10)
    assert backend.calls == 4  # 2 batches x (1 call + 1 repair round for the JUNK rows)
    assert [len(c) for c in backend.sent].count(3) == 5  # the 5 JUNK rows were repaired
    counts = {p: out["perturbation"].count(p) for p in set(out["perturbation"])}
    assert counts == {"guideline_edit_existing": 5, "guideline_edit_new": 5, "kept_safe": 5, "none": 5}


def test_answers_are_cached_across_runs(scripted):
    backend, engine = scripted()
    ds = rows("EDIT a", "NEW b")
    first = guideline_edit(ds, GuidelineEditConfig(engine=engine)).to_list()
    clear_engines()  # a new process: the engine is rebuilt, the response cache on disk stays
    second = guideline_edit(ds.map(lambda r: r), GuidelineEditConfig(engine=engine)).to_list()
    assert second == first and len(backend.sent) == 2


def test_prompt_renders_policy_message_and_new_code():
    text = load_prompt("guideline_edit", "v1").render(
        taxonomy=TAXONOMY.render(), text="hello there", n_categories=3, new_code="S4"
    )
    assert TAXONOMY.render() in text and "hello there" in text and "S4" in text and "S1 to S3" in text
    for key in EDIT_SCHEMA["required"]:
        assert f'"{key}"' in text


def test_schema_is_strict_and_flat():
    assert EDIT_SCHEMA["additionalProperties"] is False
    assert set(EDIT_SCHEMA["required"]) == set(EDIT_SCHEMA["properties"])


def test_fingerprint_changes_with_prompt_and_config_not_with_throughput(scripted, monkeypatch):
    _, engine = scripted()
    ds = rows("EDIT a", "SAFE b")
    base = GuidelineEditConfig(engine=engine)

    def fingerprint(config):
        return guideline_edit(ds, config)._fingerprint

    reference = fingerprint(base)
    assert fingerprint(base) == reference
    assert (
        fingerprint(GuidelineEditConfig(engine=engine.replace(max_concurrency=128, timeout=5.0, batch_size=2)))
        == reference
    )
    assert (
        fingerprint(GuidelineEditConfig(engine=engine, sampling=SamplingParams(max_tokens=100, temperature=0)))
        != reference
    )
    assert fingerprint(GuidelineEditConfig(engine=engine, max_repairs=0)) != reference
    assert fingerprint(GuidelineEditConfig(engine=engine.replace(model="other-model"))) != reference
    # a different prompt text (as a new prompt version would be) changes the fingerprint
    original = load_prompt("guideline_edit", "v1")
    monkeypatch.setattr(
        guideline_edit_module,
        "load_prompt",
        lambda name, version, prompt_set="small": Prompt(name, version, original.text + "\n{# Be brief. #}"),
    )
    assert fingerprint(base) != reference
    assert common.stage_fingerprint(
        ds, "guideline_edit", "1", (original,), base, guideline_edit
    ) != common.stage_fingerprint(
        ds, "guideline_edit", "1", (Prompt("guideline_edit", "v2", original.text),), base, guideline_edit
    )


def test_unknown_prompt_version_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match=r"expected one of the versions \['v1'\]"):
        GuidelineEditConfig(prompt_version="v9")
    with pytest.raises(ValueError, match="max_repairs"):
        GuidelineEditConfig(max_repairs=-1)


def test_apply_edit_cleans_lines_and_keeps_the_name():
    kind, new, code = apply_edit(
        TAXONOMY,
        {
            "action": "edit_existing",
            "category": " s3: Fraud",
            "name": "ignored",
            "should_not": ["*  Help people scam others.\n", "", "Sell fake tickets."],
            "can": [],
        },
    )
    assert (kind, code) == ("edit_existing", "S3")
    assert new["S3"] == Category("Fraud", should_not=("Help people scam others.", "Sell fake tickets."))


@pytest.mark.slow
def test_end_to_end_with_the_embedded_model():
    """The real local engine (SmolLM2-135M): weak, so every outcome is allowed, but none may be lost."""
    clear_engines()
    ds = rows(
        "How much money does my coworker make?",
        "How do I kill a Python process?",
        "How do I stab someone?",
        labels=["safe", "safe", "unsafe"],
    )
    config = GuidelineEditConfig(
        engine=EngineConfig(engine="local", model="embedded"),
        sampling=SamplingParams(max_tokens=96, temperature=0),
        max_repairs=0,
    )
    out = guideline_edit(ds, config)
    assert len(out) == 3 and out[2] == ds[2]
    for row in out.select(range(2)):
        assert row["edit_raw"] and row["edit_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
        if row["edit_error"] is None:
            assert row["perturbation"] in ("guideline_edit_existing", "guideline_edit_new", "kept_safe")
            assert row["label"] == (0 if row["perturbation"] == "kept_safe" else 1)
            Taxonomy.parse(row["taxonomy"])
        else:
            assert (row["perturbation"], row["label"]) == ("none", 0)
    clear_engines()
