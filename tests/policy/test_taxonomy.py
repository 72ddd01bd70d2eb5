"""Taxonomy: the S-coded text format, its exact round trip, perturbation code maps, and file errors."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_barred.policy.task import TaskFileError
from hf_barred.policy.taxonomy import Category, Taxonomy, TaxonomyTextError, code_number, remap_codes
from tests.utils import REPO_ROOT

EXAMPLE = REPO_ROOT / "dataset_scripts" / "policy-xstest" / "taxonomy.yaml"

# One-line, stripped, non-empty strings (names and guideline lines), including awkward characters.
_line = (
    st.text(
        alphabet=st.characters(
            blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x85"
        ),
        min_size=1,
        max_size=40,
    )
    .map(str.strip)
    .filter(bool)
)
categories = st.builds(
    Category,
    name=_line,
    should_not=st.lists(_line, max_size=3).map(tuple),
    can=st.lists(_line, max_size=3).map(tuple),
)
taxonomies = st.lists(categories, min_size=1, max_size=12).map(lambda cs: Taxonomy(tuple(cs)))


def small_taxonomy(n=4):
    return Taxonomy(
        tuple(
            Category(f"Cat {i}", should_not=(f"Do bad thing {i}.",), can=(f"Talk about {i}.",)) for i in range(1, n + 1)
        )
    )


def test_render_format_is_the_documented_one():
    taxonomy = Taxonomy(
        (
            Category(
                "Violent Crimes",
                should_not=("Help plan violent crimes.", "Praise violence."),
                can=("Discuss violence in fiction.",),
            ),
            Category("Privacy", should_not=("Reveal private addresses.",)),
            Category("Empty"),
        )
    )
    assert taxonomy.render() == (
        "S1: Violent Crimes.\nShould not\n- Help plan violent crimes.\n- Praise violence.\nCan\n"
        "- Discuss violence in fiction.\n\nS2: Privacy.\nShould not\n- Reveal private addresses.\n\nS3: Empty."
    )
    assert taxonomy.codes == ("S1", "S2", "S3")
    assert taxonomy["S2"].name == "Privacy" and taxonomy.code_of("privacy") == "S2"


@settings(max_examples=200, deadline=None)
@given(taxonomies)
def test_round_trip_is_exact(taxonomy):
    text = taxonomy.render()
    parsed = Taxonomy.parse(text)
    assert parsed == taxonomy
    assert parsed.render() == text


@settings(max_examples=50, deadline=None)
@given(taxonomies)
def test_parse_tolerates_crlf_trailing_spaces_and_extra_blank_lines(taxonomy):
    text = taxonomy.render()
    messy = "\n\n" + text.replace("\n\n", "\n \n\n").replace("\n", "  \r\n") + "\n\n"
    assert Taxonomy.parse(messy) == taxonomy


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("", "empty text"),
        ("S2: Violence.", "line 1: expected the header 'S1: <name>.'"),
        ("S1: Violence.\n\nS3: Fraud.", "line 3: expected the header 'S2: <name>.'"),
        ("S1: Violence", "expected the header"),
        ("S1: Violence.\n- no section", "line 2: expected 'Should not', 'Can' or a guideline line"),
        ("S1: Violence.\nShould not\nHelp people.", "line 3"),
        ("S1: Violence.\nCan\n- a\nShould not\n- b", "at most one 'Should not' then one 'Can'"),
        ("S1: Violence.\nShould not\n- a\nShould not\n- b", "again"),
    ],
)
def test_parse_errors_name_the_line_expected_and_found(text, fragment):
    with pytest.raises(TaxonomyTextError, match="expected") as info:
        Taxonomy.parse(text)
    assert fragment in str(info.value)


@settings(max_examples=100, deadline=None)
@given(taxonomies, st.data())
def test_delete_keeps_names_guidelines_and_order(taxonomy, data):
    n = len(taxonomy)
    doomed = data.draw(st.sets(st.sampled_from(taxonomy.codes), max_size=n - 1))
    smaller, code_map = taxonomy.delete(doomed)
    assert len(smaller) == n - len(doomed)
    assert smaller.codes == tuple(f"S{i}" for i in range(1, len(smaller) + 1))  # contiguous
    assert set(code_map) == set(taxonomy.codes) - doomed
    for old, new in code_map.items():
        assert smaller[new] == taxonomy[old]
    kept = [code_number(c) for c in taxonomy.codes if c not in doomed]
    assert [code_number(code_map[f"S{k}"]) for k in kept] == list(range(1, len(kept) + 1))  # order kept


@settings(max_examples=100, deadline=None)
@given(taxonomies, st.randoms(use_true_random=False))
def test_shuffle_is_a_permutation_with_a_consistent_code_map(taxonomy, rng):
    shuffled, code_map = taxonomy.shuffle(rng)
    assert sorted(code_map) == sorted(taxonomy.codes) and sorted(code_map.values()) == sorted(taxonomy.codes)
    for old, new in code_map.items():
        assert shuffled[new] == taxonomy[old]
    back, back_map = shuffled.reindex([code_map[c] for c in taxonomy.codes])
    assert back == taxonomy and all(back_map[code_map[c]] == c for c in taxonomy.codes)


def test_delete_refuses_to_empty_the_taxonomy_and_unknown_codes():
    taxonomy = small_taxonomy(2)
    with pytest.raises(ValueError, match="at least one"):
        taxonomy.delete(["S1", "S2"])
    with pytest.raises(KeyError, match="S1..S2"):
        taxonomy.delete(["S3"])
    with pytest.raises(ValueError, match="permutation"):
        taxonomy.reindex(["S1"])


def test_add_and_replace_category():
    taxonomy = small_taxonomy(2)
    bigger, code = taxonomy.add(Category("Gambling", should_not=("Help people gamble.",)))
    assert code == "S3" and bigger["S3"].name == "Gambling" and bigger["S1"] == taxonomy["S1"]
    edited = taxonomy.replace_category("S2", taxonomy["S2"].replace(can=()))
    assert edited["S2"].can == () and edited["S1"] == taxonomy["S1"]


def test_remap_codes_drops_deleted_and_sorts():
    assert remap_codes(["S4", "S2", "S9"], {"S2": "S3", "S4": "S1"}) == ["S1", "S3"]


def test_category_rejects_multiline_and_padded_lines():
    with pytest.raises(ValueError, match="single line"):
        Category("Two\nlines")
    with pytest.raises(ValueError, match="single line"):
        Category("Ok", should_not=(" padded",))
    with pytest.raises(ValueError, match="list of lines"):
        Category("Ok", should_not="not a list")


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_file_round_trip(tmp_path, suffix):
    taxonomy = Taxonomy(small_taxonomy(3).categories, name="demo", description="A demo policy.")
    path = tmp_path / f"policy{suffix}"
    taxonomy.save(path)
    loaded = Taxonomy.load(path)
    assert loaded == taxonomy and loaded.name == "demo" and loaded.description == "A demo policy."
    assert loaded.render() == taxonomy.render()


def test_example_taxonomy_loads():
    taxonomy = Taxonomy.load(EXAMPLE)
    assert len(taxonomy) == 12 and taxonomy["S1"].name == "Violent Crimes" and taxonomy["S12"].name == "Sexual Content"
    assert all(c.should_not and c.can for c in taxonomy)
    assert Taxonomy.parse(taxonomy.render()) == taxonomy


@pytest.mark.parametrize(
    "content, field, expected",
    [
        ({"name": "x"}, "categories", "a non-empty list of categories"),
        ({"categories": []}, "categories", "a non-empty list"),
        ({"categories": [{"name": "A"}], "colour": "red"}, "colour", "one of the fields"),
        ({"categories": [{"name": "A", "shouldnt": ["x"]}]}, "categories[0].shouldnt", "one of the fields"),
        ({"categories": [{"code": "S2", "name": "A"}]}, "categories[0].code", "'S1'"),
        ({"categories": [{"name": ""}]}, "categories[0].name", "a one-line category name"),
        (
            {"categories": [{"name": "A", "should_not": {"a": 1}}]},
            "categories[0].should_not",
            "a list of guideline lines",
        ),
        ({"categories": [{"name": "A", "can": ["ok", 3]}]}, "categories[0].can[1]", "a non-empty one-line string"),
        ({"categories": [{"name": "A"}, {"name": "a"}]}, "categories", "distinct category names"),
        (["not", "a", "mapping"], "(top level)", "a mapping"),
    ],
)
def test_bad_files_name_file_field_expected_and_found(tmp_path, content, field, expected):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(content))
    with pytest.raises(TaskFileError) as info:
        Taxonomy.load(path)
    message = str(info.value)
    assert str(path) in message and f"field '{field}'" in message
    assert f"expected {expected}" in message and "found" in message


def test_invalid_yaml_and_missing_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("categories: [unclosed\n")
    with pytest.raises(TaskFileError, match="not valid YAML"):
        Taxonomy.load(path)
    with pytest.raises(TaskFileError, match="file not found"):
        Taxonomy.load(tmp_path / "missing.yaml")


def test_yaml_accepts_single_string_guidelines(tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("categories:\n  - name: Hate\n    should_not: Demean people.\n")
    assert Taxonomy.load(path)["S1"].should_not == ("Demean people.",)
