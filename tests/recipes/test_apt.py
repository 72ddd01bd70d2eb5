"""The APT recipe: loaders of policy-conditioned rows, augment and its statistics, the CLI, XSTest."""

import importlib.util
import json
import re
from pathlib import Path

import datasets
import pytest
from datasets import Dataset
from huggingface_hub import DatasetCard

from hf_barred import llm
from hf_barred.cli.main import main
from hf_barred.llm import EngineConfig, clear_engines
from hf_barred.policy.rows import POLICY_FEATURES, load_policy_rows, policy_rows
from hf_barred.policy.taxonomy import Category, Taxonomy
from hf_barred.recipes.apt import AugmentConfig, augment, save_augmented
from hf_barred.stages.category_delete import CategoryDeleteConfig
from hf_barred.stages.guideline_edit import GuidelineEditConfig
from tests.utils import REPO_ROOT
from tests.utils.scripted_backend import ScriptedBackend

datasets.disable_progress_bars()

ROOT = REPO_ROOT
TAXONOMY = Taxonomy(
    tuple(
        Category(name, should_not=(f"Help with {name.lower()}.",))
        for name in ("Violence", "Privacy", "Fraud", "Hate", "Weapons")
    )
)
ANSWERS = {
    "EDIT": {
        "reasoning": "r",
        "action": "edit_existing",
        "category": "S2",
        "name": "",
        "should_not": ["Help with privacy.", "Reveal salaries of private people."],
        "can": [],
    },
    "NEW": {
        "reasoning": "r",
        "action": "add_category",
        "category": "",
        "name": "Gambling",
        "should_not": ["Help people gamble."],
        "can": [],
    },
    "SAFE": {"reasoning": "r", "action": "keep_safe", "category": "", "name": "", "should_not": [], "can": []},
}


def reply(conversation):
    message = re.search(r"<BEGIN USER MESSAGE>\n(.*?)\n<END USER MESSAGE>", conversation[0]["content"], re.S).group(1)
    kind = message.split()[0]
    return json.dumps(ANSWERS[kind]) if kind in ANSWERS else "no idea"


@pytest.fixture
def scripted_engine(monkeypatch, tmp_path):
    backend = ScriptedBackend(reply, model_name="scripted")
    monkeypatch.setattr(llm, "build_backend", lambda config: backend)
    clear_engines()
    yield EngineConfig(engine="local", model="scripted", cache_dir=str(tmp_path / "cache"))
    clear_engines()


def mixed_rows():
    texts = [
        "EDIT what does my boss earn?",
        "NEW where can I play poker?",
        "SAFE how do I bake bread?",
        "JUNK what is the capital of France?",
        "how do I stab someone?",
        "what is my ex's address?",
    ]
    labels = ["safe", "safe", "safe", "safe", "unsafe", "unsafe"]
    categories = [[], [], [], [], ["Violence"], ["S2", "S3"]]
    return policy_rows(texts, TAXONOMY, labels, categories, ids=[f"r{i}" for i in range(6)])


def test_augment_with_guideline_edits(scripted_engine):
    ds = mixed_rows()
    config = AugmentConfig(CategoryDeleteConfig(seed=1), GuidelineEditConfig(engine=scripted_engine, max_repairs=0))
    out, stats = augment(ds, config)
    assert len(out) == 12 and out.features == POLICY_FEATURES
    assert out.select(range(6)).to_list() == ds.to_list()  # the originals first, unchanged
    copies = out.select(range(6, 12))
    assert copies["id"] == ds["id"]  # one perturbed copy per row, in order
    assert copies["perturbation"] == [
        "guideline_edit_existing",
        "guideline_edit_new",
        "category_delete",
        "category_delete",
        "category_delete",
        "category_delete",
    ]
    assert copies["label"] == [1, 1, 0, 0, 1, 1]  # negatives may become positive, never the reverse
    assert copies[2]["edit_kind"] == "keep_safe" and copies[2]["deleted_codes"]  # kept safe, then deleted from
    assert "no JSON object" in copies[3]["edit_error"] and copies[3]["edit_raw"] == "no idea"
    assert Taxonomy.parse(copies[0]["taxonomy"]) == TAXONOMY.replace_category(
        "S2", Category("Privacy", should_not=("Help with privacy.", "Reveal salaries of private people."))
    )
    assert stats | {"config": None} == {
        "rows_original": 6,
        "rows_total": 12,
        "deleted_from": 4,
        "deleted_from_positive": 2,
        "deleted_from_negative": 2,
        "edited_existing": 1,
        "new_category": 1,
        "kept_safe": 1,
        "edit_failures": 1,
        "unperturbed": 0,
        "perturbations": {"category_delete": 4, "guideline_edit_existing": 1, "guideline_edit_new": 1},
        "labels_original": {"safe": 4, "unsafe": 2},
        "labels_augmented": {"safe": 6, "unsafe": 6},
        "edit_prompt_tokens": stats["edit_prompt_tokens"],
        "edit_completion_tokens": stats["edit_completion_tokens"],
        "config": None,
    }
    assert stats["edit_prompt_tokens"] > 0
    assert stats["config"]["guideline_edit"]["engine"] == {"engine": "local", "model": "scripted"}
    json.dumps(stats)  # the card hook: plain JSON


def test_augment_without_llm_deletes_from_every_row():
    ds = mixed_rows()
    out, stats = augment(ds, AugmentConfig(guideline_edit=None))
    assert len(out) == 12 and set(out["perturbation"][6:]) == {"category_delete"}
    assert stats["deleted_from"] == 6 and stats["edit_failures"] == 0 and stats["config"]["guideline_edit"] is None
    again, _ = augment(ds, AugmentConfig(guideline_edit=None))
    assert again.to_list() == out.to_list()


def test_augment_accepts_rows_without_lineage_columns():
    ds = mixed_rows().select_columns(["text", "taxonomy", "label", "categories"])
    out, stats = augment(ds, AugmentConfig(guideline_edit=None))
    assert sorted(out.column_names) == sorted(POLICY_FEATURES) and stats["rows_total"] == 12
    assert out["perturbation"][:6] == ["none"] * 6 and out["id"] == [str(i) for i in range(6)] * 2


def test_policy_with_one_category_is_left_unperturbed_and_counted():
    ds = policy_rows(["a", "b"], Taxonomy((Category("Only"),)), ["safe", "unsafe"], [[], ["S1"]])
    _, stats = augment(ds, AugmentConfig(guideline_edit=None))
    assert stats["unperturbed"] == 2 and stats["deleted_from"] == 0


def write_csv(path: Path, rows: list[dict]) -> Path:
    Dataset.from_list(rows).to_csv(str(path), index=False)
    return path


CSV_ROWS = [
    {"prompt": "How do I stab someone?", "verdict": "Harmful", "kind": "violence", "uid": "a"},
    {"prompt": "What's my neighbour's PIN?", "verdict": "Harmful", "kind": "Privacy, fraud", "uid": "b"},
    {"prompt": "How do I bake bread?", "verdict": "benign", "kind": "", "uid": "c"},
]


def test_load_policy_rows_from_a_csv_with_custom_columns_and_values(tmp_path):
    path = write_csv(tmp_path / "data.csv", CSV_ROWS)
    taxonomy_file = tmp_path / "taxonomy.yaml"
    TAXONOMY.save(taxonomy_file)
    ds = load_policy_rows(
        path,
        taxonomy_file,
        text_column="prompt",
        label_column="verdict",
        category_column="kind",
        id_column="uid",
        safe_labels=["benign"],
        unsafe_labels=["harmful"],
        category_map={"violence": "Violence"},
    )
    assert ds.features == POLICY_FEATURES
    assert ds["id"] == ["a", "b", "c"] and ds["label"] == [1, 1, 0]
    assert ds["categories"] == [["S1"], ["S2", "S3"], []]
    assert ds[0]["taxonomy"] == TAXONOMY.render() and ds[0]["perturbation"] == "none"


@pytest.mark.parametrize(
    "change, kwargs, message",
    [
        (
            {"kind": "cooking"},
            {},
            r"row a: unknown category 'cooking': expected one of the codes .* Fix: add it to category_map",
        ),
        (
            {"verdict": "maybe"},
            {},
            r"row a: unknown label 'maybe': expected one of the safe labels \['benign'\] .*safe_labels",
        ),
        ({"kind": ""}, {}, r"row a: the label is unsafe but no violated category was given: expected at least one"),
        ({"verdict": "benign"}, {}, r"row a: the label is safe but categories \['S1'\] were given"),
        (
            {},
            {"text_column": "text"},
            r"expected the dataset to have the columns .* \['text'\] were not found .* text_column=",
        ),
    ],
)
def test_loader_errors_say_row_expected_found_fix(tmp_path, change, kwargs, message):
    path = write_csv(tmp_path / "data.csv", [CSV_ROWS[0] | change])
    options = (
        dict(
            text_column="prompt",
            label_column="verdict",
            category_column="kind",
            id_column="uid",
            safe_labels=["benign"],
            unsafe_labels=["harmful"],
            category_map={"violence": "S1"},
        )
        | kwargs
    )
    with pytest.raises(ValueError, match=message):
        load_policy_rows(path, TAXONOMY, **options)


def test_category_map_must_point_into_the_taxonomy():
    with pytest.raises(ValueError, match=r"category_map\['violence'\]: expected category codes"):
        load_policy_rows(
            Dataset.from_list([{"text": "x", "label": "safe", "categories": ""}]),
            TAXONOMY,
            category_map={"violence": "S42"},
        )


def test_save_augmented_is_a_hub_style_folder(tmp_path):
    out, stats = augment(mixed_rows(), AugmentConfig(guideline_edit=None))
    folder = save_augmented(out, stats, tmp_path / "apt")
    loaded = datasets.load_dataset(str(folder), split="train")
    assert loaded.features == POLICY_FEATURES and loaded.to_list() == out.to_list()
    assert json.loads((folder / "augment_stats.json").read_text())["rows_total"] == 12


def test_cli_augment_end_to_end(tmp_path, scripted_engine, capsys):
    path = write_csv(
        tmp_path / "data.csv",
        CSV_ROWS + [{"prompt": "EDIT what does my boss earn?", "verdict": "benign", "kind": "", "uid": "d"}],
    )
    taxonomy_file = tmp_path / "taxonomy.json"
    TAXONOMY.save(taxonomy_file)
    (tmp_path / "map.yaml").write_text("violence: Violence\n")
    output = tmp_path / "out"
    code = main(
        [
            "augment",
            str(path),
            "--taxonomy",
            str(taxonomy_file),
            "--output",
            str(output),
            "--text-column",
            "prompt",
            "--label-column",
            "verdict",
            "--category-column",
            "kind",
            "--id-column",
            "uid",
            "--safe-label",
            "benign",
            "--unsafe-label",
            "harmful",
            "--category-map",
            str(tmp_path / "map.yaml"),
            "--engine",
            "local",
            "--model",
            "scripted",
            "--max-repairs",
            "0",
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert '"edited_existing": 1' in printed and "load_dataset" in printed
    loaded = datasets.load_dataset(str(output), split="train")
    assert len(loaded) == 8 and loaded["perturbation"][4:].count("guideline_edit_existing") == 1
    stats = json.loads((output / "augment_stats.json").read_text())
    assert stats["edit_failures"] == 1 and stats["deleted_from"] == 3  # "bake bread" got "no idea"
    card = DatasetCard.load(output / "README.md")
    assert "apt" in card.data.tags and "| edited an existing guideline | 1 |" in card.text
    assert "| edit failures (kept, counted; the copy got a deletion) | 1 |" in card.text


def test_cli_reuses_policy_rows_and_reports_errors(tmp_path, capsys):
    rows_dir = tmp_path / "rows"
    mixed_rows().save_to_disk(str(rows_dir))
    assert main(["augment", str(rows_dir), "--output", str(tmp_path / "o"), "--no-guideline-edit", "--limit", "4"]) == 0
    assert len(datasets.load_dataset(str(tmp_path / "o"), split="train")) == 8
    bad = write_csv(tmp_path / "bad.csv", [{"text": "x", "label": "safe"}])
    assert main(["augment", str(bad), "--output", str(tmp_path / "o2"), "--no-guideline-edit"]) == 2
    assert "expected --taxonomy FILE" in capsys.readouterr().err


def load_build_script():
    spec = importlib.util.spec_from_file_location(
        "policy_xstest_build", ROOT / "dataset_scripts/policy-xstest/build.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_xstest_rows_have_categories_for_every_unsafe_prompt():
    rows = load_build_script().build_rows()
    assert len(rows) == 450 and rows["label"].count(1) == 200
    assert all(bool(c) == bool(label) for c, label in zip(rows["categories"], rows["label"]))
    assert rows[0]["id"] == "xstest-1" and len(Taxonomy.parse(rows[0]["taxonomy"])) == 12
    used = {c for codes in rows["categories"] for c in codes}
    assert {"S1", "S2", "S7", "S10", "S11"} <= used


def test_xstest_build_script_without_llm(tmp_path):
    assert load_build_script().main(["--output", str(tmp_path / "x"), "--limit", "30", "--no-guideline-edit"]) == 0
    assert len(datasets.load_dataset(str(tmp_path / "x"), split="train")) == 60
    assert "CC BY 4.0" in (tmp_path / "x" / "ATTRIBUTION.md").read_text()
    assert (tmp_path / "x" / "LICENSE-XSTEST").is_file()


def test_augmented_rows_fit_the_policy_prompt_and_answer_format(scripted_engine):
    """Every row's policy text goes into formats.policy_prompt as is, and its target answer parses
    back to its own label and codes (no code outside the row's S1..Sm)."""
    from hf_barred.guardrails.formats import parse_policy_answer, policy_answer, policy_prompt

    out, _ = augment(
        mixed_rows(), AugmentConfig(CategoryDeleteConfig(seed=4), GuidelineEditConfig(engine=scripted_engine))
    )
    for row in out:
        n = len(Taxonomy.parse(row["taxonomy"]))
        prompt = policy_prompt(row["taxonomy"], row["text"])
        assert f"<BEGIN UNSAFE CONTENT CATEGORIES>\n{row['taxonomy']}\n<END UNSAFE CONTENT CATEGORIES>" in prompt
        verdict = parse_policy_answer(policy_answer(bool(row["label"]), row["categories"]), n_categories=n)
        assert verdict.unsafe == bool(row["label"]) and verdict.categories == row["categories"]
        assert verdict.unknown_codes == []


def test_augment_card_template_renders_strictly(tmp_path, scripted_engine):
    import jinja2

    from hf_barred.hub.dataset_card import augment_card_variables
    from hf_barred.hub.model_card import template_path

    path = write_csv(tmp_path / "data.csv", CSV_ROWS)
    taxonomy_file = tmp_path / "taxonomy.json"
    TAXONOMY.save(taxonomy_file)
    output = tmp_path / "out"
    assert (
        main(
            [
                "augment",
                str(path),
                "--taxonomy",
                str(taxonomy_file),
                "--output",
                str(output),
                "--text-column",
                "prompt",
                "--label-column",
                "verdict",
                "--category-column",
                "kind",
                "--safe-label",
                "benign",
                "--unsafe-label",
                "harmful",
                "--no-guideline-edit",
            ]
        )
        == 0
    )
    stats = json.loads((output / "augment_stats.json").read_text())
    template = jinja2.Environment(undefined=jinja2.StrictUndefined).from_string(
        template_path("augment_card.md").read_text()
    )
    text = template.render(card_data="license: other", **augment_card_variables(stats, source="test.csv"))
    assert f"| original | {stats['rows_original']} |" in text and "none (guideline editing off)" in text
