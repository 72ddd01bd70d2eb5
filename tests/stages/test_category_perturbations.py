"""Category deletion and shuffling: invariants over random taxonomies and labels, determinism, errors."""

from collections import Counter

import datasets
import pytest
from datasets import ClassLabel, Dataset, Value
from hypothesis import given, settings
from hypothesis import strategies as st

from hf_barred.policy.rows import POLICY_FEATURES, policy_rows
from hf_barred.policy.taxonomy import Category, Taxonomy, code_number
from hf_barred.stages.category_delete import CategoryDeleteConfig, category_delete
from hf_barred.stages.category_shuffle import CategoryShuffleConfig, category_shuffle

datasets.disable_progress_bars()


def make_taxonomy(n: int, tag: str = "") -> Taxonomy:
    return Taxonomy(
        tuple(
            Category(
                f"Category {tag}{i}",
                should_not=(f"Help with harm {i}.",),
                can=(f"Discuss topic {i}.",) if i % 2 else (),
            )
            for i in range(1, n + 1)
        )
    )


@st.composite
def policy_datasets(draw, min_categories=1):
    """Rows under several random taxonomies (1..15 categories), with random labels and violated codes."""
    taxonomies = [
        make_taxonomy(n, tag=f"{t}-")
        for t, n in enumerate(draw(st.lists(st.integers(min_categories, 15), min_size=1, max_size=3)))
    ]
    n_rows = draw(st.integers(1, 25))
    records = {name: [] for name in ("id", "text", "taxonomy", "label", "categories")}
    for i in range(n_rows):
        taxonomy = draw(st.sampled_from(taxonomies))
        unsafe = draw(st.booleans())
        codes = (
            sorted(draw(st.sets(st.sampled_from(taxonomy.codes), min_size=1, max_size=4)), key=code_number)
            if unsafe
            else []
        )
        records["id"].append(str(i))
        records["text"].append(draw(st.text(max_size=30)) + f" #{i}")
        records["taxonomy"].append(taxonomy.render())
        records["label"].append(int(unsafe))
        records["categories"].append(codes)
    features = datasets.Features({k: POLICY_FEATURES[k] for k in records})
    return Dataset.from_dict(records, features=features)


def check_perturbed_row(before: dict, after: dict, max_deleted: int | None) -> None:
    """The invariants shared by deletion (max_deleted set) and shuffling (None)."""
    old = Taxonomy.parse(before["taxonomy"])
    new = Taxonomy.parse(after["taxonomy"])  # parse checks that codes are contiguous S1..Sm
    assert after["text"] == before["text"] and after["id"] == before["id"]
    assert after["label"] == before["label"]  # positives stay positive, negatives negative
    if len(old) == 1:
        assert after["taxonomy"] == before["taxonomy"] and after["perturbation"] == "none"
        return
    sources = after["source_codes"]
    assert len(sources) == len(new)
    for new_code, old_code in zip(new.codes, sources):
        assert new[new_code] == old[old_code]  # every remaining category keeps its name and guidelines
    assert all(1 <= code_number(c) <= len(new) for c in after["categories"])  # codes in range
    # categories are exactly the remapped violated codes that survived
    assert sorted((sources[code_number(c) - 1] for c in after["categories"]), key=code_number) == sorted(
        (c for c in before["categories"] if c in sources), key=code_number
    )
    if before["label"] == 1:
        assert after["categories"], "a positive row must keep at least one violated category"
    else:
        assert after["categories"] == []
    if max_deleted is None:
        assert sorted(sources, key=code_number) == list(old.codes) and after["deleted_codes"] == []
    else:
        k = len(after["deleted_codes"])
        assert 1 <= k <= min(max_deleted, len(old) - 1)
        assert sorted(sources + after["deleted_codes"], key=code_number) == list(old.codes)
        assert [code_number(c) for c in sources] == sorted(code_number(c) for c in sources)  # order kept


@settings(max_examples=60, deadline=None)
@given(policy_datasets(), st.integers(0, 2**31), st.integers(1, 6))
def test_deletion_invariants(ds, seed, max_deleted):
    out = category_delete(ds, CategoryDeleteConfig(seed=seed, max_deleted=max_deleted))
    assert out.features["label"] == POLICY_FEATURES["label"]
    for before, after in zip(ds, out):
        check_perturbed_row(before, after, max_deleted)
        if len(Taxonomy.parse(before["taxonomy"])) > 1:
            assert after["perturbation"] == "category_delete"


@settings(max_examples=60, deadline=None)
@given(policy_datasets(), st.integers(0, 2**31))
def test_shuffle_invariants(ds, seed):
    out = category_shuffle(ds, CategoryShuffleConfig(seed=seed))
    for before, after in zip(ds, out):
        check_perturbed_row(before, after, None)
        old, new = Taxonomy.parse(before["taxonomy"]), Taxonomy.parse(after["taxonomy"])
        assert {new[c].name for c in after["categories"]} == {old[c].name for c in before["categories"]}


@settings(max_examples=20, deadline=None)
@given(policy_datasets(min_categories=2), st.integers(0, 1000), st.sampled_from([1, 3, 7, 1000]))
def test_same_seed_same_rows_across_batch_sizes_and_row_order(ds, seed, batch_size):
    config = CategoryDeleteConfig(seed=seed)
    reference = category_delete(ds, config).to_list()
    assert category_delete(ds, config, batch_size=batch_size).to_list() == reference
    reversed_out = category_delete(ds.select(range(len(ds) - 1, -1, -1)), config).to_list()
    assert reversed_out[::-1] == reference  # a row's draw depends on the row, not its position


def fixed_rows(n_rows=300, n_categories=12):
    taxonomy = make_taxonomy(n_categories)
    labels = ["unsafe" if i % 2 else "safe" for i in range(n_rows)]
    categories = [
        [f"S{1 + i % n_categories}", f"S{1 + (i * 7) % n_categories}"] if i % 2 else [] for i in range(n_rows)
    ]
    return policy_rows([f"message number {i}" for i in range(n_rows)], taxonomy, labels, categories)


def test_same_seed_same_rows_with_num_proc():
    ds = fixed_rows(200)
    config = CategoryDeleteConfig(seed=3)
    assert category_delete(ds, config, num_proc=2, batch_size=17).to_list() == category_delete(ds, config).to_list()


def test_different_seeds_give_different_deletions():
    ds = fixed_rows(50)
    a = category_delete(ds, CategoryDeleteConfig(seed=1))["deleted_codes"]
    b = category_delete(ds, CategoryDeleteConfig(seed=2))["deleted_codes"]
    assert sum(x != y for x, y in zip(a, b)) > 25


def test_number_deleted_is_uniform_over_1_to_5():
    out = category_delete(fixed_rows(3000), CategoryDeleteConfig(seed=0))
    counts = Counter(len(codes) for codes in out["deleted_codes"])
    assert sorted(counts) == [1, 2, 3, 4, 5]
    assert all(500 < c < 700 for c in counts.values()), counts  # 600 expected each


def test_positives_keep_each_violated_category_sometimes():
    """The protected category is drawn among the violated ones, so every violated code can be deleted."""
    taxonomy = make_taxonomy(3)
    ds = policy_rows([f"m{i}" for i in range(200)], taxonomy, ["unsafe"] * 200, [["S1", "S2"]] * 200)
    out = category_delete(ds, CategoryDeleteConfig(seed=0, max_deleted=1))
    deleted = Counter(c for codes in out["deleted_codes"] for c in codes)
    assert deleted["S1"] > 20 and deleted["S2"] > 20 and deleted["S3"] > 20
    assert all(out["categories"])


def test_deletion_composes_with_a_previous_perturbation():
    ds = fixed_rows(40)
    once = category_delete(ds, CategoryDeleteConfig(seed=0))
    twice = category_delete(once, CategoryDeleteConfig(seed=1))
    for original, row in zip(ds, twice):
        if len(Taxonomy.parse(row["taxonomy"])) == 1 and row["perturbation"] == "category_delete":
            continue
        old, new = Taxonomy.parse(original["taxonomy"]), Taxonomy.parse(row["taxonomy"])
        for code, source in zip(new.codes, row["source_codes"]):
            assert new[code] == old[source]  # source codes refer to the *original* policy
        assert sorted(row["source_codes"] + row["deleted_codes"], key=code_number) == list(old.codes)


def test_extra_columns_and_features_are_kept():
    ds = fixed_rows(10).add_column("lang", ["en"] * 10)
    out = category_delete(ds, CategoryDeleteConfig())
    assert out["lang"] == ["en"] * 10 and out.features["lang"] == Value("string")
    assert out.features["label"] == ClassLabel(names=["safe", "unsafe"])


def test_fingerprint_follows_the_config():
    ds = fixed_rows(10)
    a = category_delete(ds, CategoryDeleteConfig(seed=0))._fingerprint
    assert category_delete(ds, CategoryDeleteConfig(seed=0))._fingerprint == a
    assert category_delete(ds, CategoryDeleteConfig(seed=1))._fingerprint != a
    assert category_delete(ds, CategoryDeleteConfig(max_deleted=2))._fingerprint != a


def test_missing_columns_and_bad_labels_are_clear_errors():
    with pytest.raises(ValueError, match=r"expected the dataset to have the columns .*'taxonomy'.*load_policy_rows"):
        category_delete(Dataset.from_dict({"text": ["x"], "label": [0]}), CategoryDeleteConfig())
    ds = Dataset.from_dict({"text": ["x"], "taxonomy": ["S1: A."], "label": ["safe"], "categories": [[]]})
    with pytest.raises(ValueError, match=r"expected 'label' to be ClassLabel\(names=\['safe', 'unsafe'\]\)"):
        category_delete(ds, CategoryDeleteConfig())


def test_bad_rows_are_clear_errors():
    features = datasets.Features({k: POLICY_FEATURES[k] for k in ("id", "text", "taxonomy", "label", "categories")})
    policy = make_taxonomy(3).render()

    def one(**row):
        base = {"id": "r1", "text": "x", "taxonomy": policy, "label": 1, "categories": ["S1"]} | row
        return Dataset.from_dict({k: [v] for k, v in base.items()}, features=features)

    with pytest.raises(ValueError, match=r"row r1 is unsafe but has no violated categories"):
        category_delete(one(categories=[]), CategoryDeleteConfig())
    with pytest.raises(ValueError, match=r"row r1: expected violated category codes among S1..S3 .* found 'S7'"):
        category_delete(one(categories=["S7"]), CategoryDeleteConfig())
    with pytest.raises(ValueError, match=r"row r1: the 'taxonomy' column is not S-coded policy text"):
        category_delete(one(taxonomy="just some words"), CategoryDeleteConfig())


def test_config_validation():
    with pytest.raises(ValueError, match="max_deleted: expected an integer >= 1"):
        CategoryDeleteConfig(max_deleted=0)
    with pytest.raises(ValueError, match="seed"):
        CategoryShuffleConfig(seed=-1)
