"""The guardrail metric module agrees with scikit-learn; judge evaluation counts parse failures;
reports are written with readable plots."""

from __future__ import annotations

import json
import random
import warnings
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset
from sklearn.metrics import accuracy_score, precision_recall_fscore_support
from sklearn.preprocessing import MultiLabelBinarizer

from hf_barred.evaluation.metrics import load_metric
from hf_barred.evaluation.metrics.guardrail_metrics import binary_metrics, category_metrics
from hf_barred.evaluation.plots import category_matrix
from hf_barred.evaluation.report import write_report

CODES = ["S1", "S2", "S3", "S4", "S10"]


def random_binary(rng: random.Random, n: int) -> tuple[list[int], list[int]]:
    refs = [rng.randint(0, 1) for _ in range(n)]
    preds = [rng.choice([0, 1, 1, 0, -1]) for _ in range(n)]
    return preds, refs


@pytest.mark.parametrize("seed", range(25))
def test_binary_metrics_agree_with_sklearn(seed):
    rng = random.Random(seed)
    preds, refs = random_binary(rng, rng.randint(1, 60))
    ours = binary_metrics(preds, refs)
    flipped = [p if p in (0, 1) else 1 - r for p, r in zip(preds, refs)]  # unparseable = wrong
    p, r, f, _ = precision_recall_fscore_support(refs, flipped, average="binary", pos_label=1, zero_division=0)
    assert ours["accuracy"] == pytest.approx(accuracy_score(refs, flipped))
    assert (ours["precision"], ours["recall"], ours["f1"]) == pytest.approx((p, r, f))
    assert ours["unparseable"] == preds.count(-1)
    (tn, fp), (fn, tp) = ours["confusion_matrix"]
    assert tn + fp + fn + tp + ours["unparseable"] == len(refs)


@pytest.mark.parametrize("seed", range(25))
def test_category_metrics_agree_with_sklearn(seed):
    rng = random.Random(seed)
    n = rng.randint(1, 50)
    refs = [rng.randint(0, 1) for _ in range(n)]
    ref_cats = [sorted(rng.sample(CODES, rng.randint(1, 3))) if y else [] for y in refs]
    preds = [rng.choice([0, 1, 1, -1]) for _ in range(n)]
    pred_cats = [sorted(rng.sample(CODES, rng.randint(0, 3))) if p == 1 else [] for p in preds]
    ours = category_metrics(preds, refs, pred_cats, ref_cats)
    positive = [i for i, y in enumerate(refs) if y == 1]
    mlb = MultiLabelBinarizer(classes=CODES)
    y_true = mlb.fit_transform([ref_cats[i] for i in positive]) if positive else np.zeros((0, len(CODES)))
    y_pred = mlb.transform([pred_cats[i] for i in positive]) if positive else np.zeros((0, len(CODES)))
    if positive:
        p, r, f, _ = precision_recall_fscore_support(y_true, y_pred, average="micro", zero_division=0)
        assert (ours["category_precision"], ours["category_recall"], ours["category_f1"]) == pytest.approx((p, r, f))
        recall_per_code = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)[1]
        support = y_true.sum(axis=0)
        for code, rec, sup in zip(CODES, recall_per_code, support):
            if sup:
                assert ours["false_negative_rates"][code] == pytest.approx(1 - rec)
                assert ours["category_support"][code] == sup
            else:
                assert code not in ours["false_negative_rates"]
    all_true, all_pred = mlb.fit_transform(ref_cats), mlb.transform(pred_cats)
    for j, code in enumerate(CODES):
        expected = int(((all_pred[:, j] == 1) & (all_true[:, j] == 0)).sum())
        assert ours["false_positives"].get(code, 0) == expected
    assert list(ours["false_positives"]) == sorted(ours["false_positives"], key=lambda c: int(c[1:]))


def test_evaluate_module_matches_the_functions():
    rng = random.Random(7)
    preds, refs = random_binary(rng, 40)
    metric = load_metric()
    for start in range(0, 40, 10):  # add_batch, as in an evaluation loop
        metric.add_batch(predictions=preds[start : start + 10], references=refs[start : start + 10])
    assert metric.compute() == binary_metrics(preds, refs)
    pred_cats = [["S1"] if p == 1 else [] for p in preds]
    ref_cats = [["S1", "S2"] if r == 1 else [] for r in refs]
    result = load_metric("categories").compute(
        predictions=preds, references=refs, predicted_categories=pred_cats, reference_categories=ref_cats
    )
    assert result == binary_metrics(preds, refs) | category_metrics(preds, refs, pred_cats, ref_cats)
    assert result["false_negative_rates"]["S2"] == 1.0


def test_none_is_unparseable_and_lengths_must_match():
    assert load_metric().compute(predictions=[None, 1], references=[1, 1])["unparseable"] == 1
    with pytest.raises(ValueError, match="as many predictions as references"):
        binary_metrics([1], [1, 0])
    with pytest.raises(ValueError, match="config 'binary' or 'categories'"):
        load_metric("multiclass")


def _judge_backend(answer):
    from hf_barred.llm import CachedBackend
    from tests.utils import scripted_backend

    return CachedBackend(scripted_backend.ScriptedBackend(answer), None)


def test_judge_evaluation_counts_parse_failures(tmp_path, monkeypatch):
    import hf_barred.llm

    replies = iter(["1", "0", "maybe", "1", "0", " 1."])
    monkeypatch.setattr(hf_barred.llm, "get_engine", lambda config: _judge_backend(lambda conv: next(replies)))
    csv_path = tmp_path / "test.csv"
    Dataset.from_dict(
        {
            "transcript": [f"User: q{i}\nAgent: a{i}" for i in range(6)],
            "predicate_label": [1, 0, 1, 0, 1, 1],
            "predicate": ["The agent gives health advice."] * 6,
        }
    ).to_csv(str(csv_path))
    from hf_barred.cli.main import main

    assert (
        main(
            [
                "evaluate",
                "embedded",
                str(csv_path),
                "--engine",
                "local",
                "--output",
                str(tmp_path / "r"),
                "--scoring",
                "generation",
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "r/report.json").read_text())
    m = report["metrics"]
    assert (m["n"], m["unparseable"], m["accuracy"]) == (6, 1, 0.5)  # rows 0, 1, 5 right
    assert report["subject"] == {"kind": "judge", "engine": "local", "model": "embedded"}
    rows = [json.loads(line) for line in (tmp_path / "r/predictions.jsonl").read_text().splitlines()]
    assert rows[2]["prediction"] == -1 and rows[2]["raw"] == "maybe" and "no 0/1 answer" in rows[2]["error"]
    assert rows[0]["text"] == "User: q0\nAgent: a0" and rows[0]["label"] == 1
    md = (tmp_path / "r/report.md").read_text()
    assert "| unparseable | 1 |" in md and "![confusion_matrix.png](confusion_matrix.png)" in md


def test_policy_judge_report_has_a_category_heatmap(tmp_path, monkeypatch):
    import hf_barred.llm

    taxonomy = "S1: Violence.\nShould not\n- Help with violence.\n\nS2: Privacy.\nShould not\n- Dox people."
    answers = iter(
        [
            '{"User Safety": "unsafe", "Safety Categories": "S1"}',
            '{"User Safety": "safe"}',
            "unsafe\nS2,S7",
            "I cannot say",
        ]
    )
    monkeypatch.setattr(hf_barred.llm, "get_engine", lambda config: _judge_backend(lambda conv: next(answers)))
    data = tmp_path / "policy.jsonl"
    rows = [
        {"text": "t1", "label": 1, "categories": ["S1"], "taxonomy": taxonomy},
        {"text": "t2", "label": 0, "categories": [], "taxonomy": taxonomy},
        {"text": "t3", "label": 1, "categories": ["S1", "S2"], "taxonomy": taxonomy},
        {"text": "t4", "label": 1, "categories": ["S2"], "taxonomy": taxonomy},
    ]
    data.write_text("\n".join(json.dumps(r) for r in rows))
    from hf_barred.cli.main import main

    assert (
        main(
            [
                "evaluate",
                "some-model",
                str(data),
                "--engine",
                "openai",
                "--base-url",
                "http://127.0.0.1:9/v1",
                "--output",
                str(tmp_path / "r"),
            ]
        )
        == 0
    )
    m = json.loads((tmp_path / "r/report.json").read_text())["metrics"]
    assert (m["unparseable"], m["category_precision"], m["category_recall"]) == (1, 1.0, pytest.approx(2 / 4))
    assert m["false_negative_rates"] == {"S1": 0.5, "S2": 0.5}
    assert (tmp_path / "r/category_heatmap.png").stat().st_size > 1000


def test_category_matrix_counts_positive_rows_only():
    rows, cols, counts = category_matrix([["S1"], ["S1", "S2"], ["S2"]], [["S1"], [], ["S1"]], [1, 1, 0])
    assert rows == ["S1", "S2"] and cols == ["S1", "S2", "none"]
    assert counts == [[1, 0, 1], [0, 0, 1]]


def test_report_without_parse_failures_has_no_unparseable_column(tmp_path):
    metrics = binary_metrics([1, 0, 1, 0], [1, 0, 0, 0])
    paths = write_report(tmp_path, metrics, label_names=["ok", "bad"], subject={"model": "m"}, dataset={"name": "d"})
    assert json.loads((tmp_path / "report.json").read_text())["plots"] == ["confusion_matrix.png"]
    assert "| true bad | 0 | 1 | 0 |" in (tmp_path / "report.md").read_text()
    assert set(paths) == {"confusion_matrix", "report.json", "report.md"}


@pytest.mark.parametrize("seed", range(10))
def test_calibration_agrees_with_sklearn(seed):
    from sklearn.metrics import average_precision_score, f1_score

    from hf_barred.evaluation.metrics.calibration import (
        expected_calibration_error,
        pr_curve,
        reliability_bins,
        threshold_for_f1,
        threshold_for_fpr,
    )

    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 80)
    labels[:2] = [0, 1]
    scores = np.clip(labels * 0.3 + rng.random(80) * 0.7, 0, 1).round(3)
    assert pr_curve(scores, labels)["average_precision"] == pytest.approx(average_precision_score(labels, scores))
    table = reliability_bins(scores, labels, bins=10)
    manual = sum(
        len(b) / 80 * abs(labels[b].mean() - scores[b].mean())
        for k in range(10)
        if len(b := np.where(np.minimum((scores * 10).astype(int), 9) == k)[0])
    )
    assert expected_calibration_error(scores, labels) == pytest.approx(manual)
    assert sum(b["count"] for b in table) == 80
    best = threshold_for_f1(scores, labels)
    assert f1_score(labels, scores >= best) == pytest.approx(max(f1_score(labels, scores >= t) for t in set(scores)))
    for target in (0.0, 0.1, 0.3):
        t = threshold_for_fpr(scores, labels, target)
        fpr = ((scores >= t) & (labels == 0)).sum() / (labels == 0).sum()
        assert fpr <= target
        lower = [s for s in set(scores) if s < t]
        if lower:  # the next lower threshold would break the target: t catches the most violations allowed
            nxt = max(lower)
            assert ((scores >= nxt) & (labels == 0)).sum() / (labels == 0).sum() > target


ZERO_BINARY = {
    "accuracy": 0.0,
    "precision": 0.0,
    "recall": 0.0,
    "f1": 0.0,
    "n": 0,
    "unparseable": 0,
    "unparseable_rate": 0.0,
    "parsed_accuracy": 0.0,
    "confusion_matrix": [[0, 0], [0, 0]],
    "unparseable_by_reference": [0, 0],
}


def test_binary_metrics_edge_cases_sklearn_would_refuse_or_warn_on():
    assert binary_metrics([], []) == ZERO_BINARY  # sklearn refuses empty input
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # zero divisions are 0.0, without sklearn's UndefinedMetricWarning
        only_failures = binary_metrics([None, -1, 2], [1, 0, 1])
        one_class = binary_metrics([0, 0], [0, 0])
    assert only_failures == ZERO_BINARY | {
        "n": 3,
        "unparseable": 3,
        "unparseable_rate": 1.0,
        "unparseable_by_reference": [1, 2],
    }
    assert one_class == ZERO_BINARY | {
        "n": 2,
        "accuracy": 1.0,
        "parsed_accuracy": 1.0,
        "confusion_matrix": [[2, 0], [0, 0]],
    }
    assert binary_metrics([1, 1], [1, 1])["f1"] == 1.0
    assert all(
        type(v) is float
        for k, v in binary_metrics([1, 0, -1], [1, 1, 0]).items()
        if k in ZERO_BINARY and isinstance(ZERO_BINARY[k], float)
    )  # plain floats (JSON, doctests), not numpy scalars


def test_category_metrics_with_one_code_stays_multilabel():
    # one code = one column, which sklearn would read as binary 0/1 labels (micro over both: 1/3 here)
    m = category_metrics([1, 1, 1], [1, 0, 1], [["S1"], ["S1"], []], [["S1"], [], ["S1"]])
    assert (m["category_precision"], m["category_recall"]) == (1.0, 0.5)
    assert (m["false_negative_rates"], m["false_positives"], m["category_support"]) == (
        {"S1": 0.5},
        {"S1": 1},
        {"S1": 2},
    )


def test_category_metrics_edge_cases():
    empty = {
        "category_precision": 0.0,
        "category_recall": 0.0,
        "category_f1": 0.0,
        "false_negative_rates": {},
        "false_positives": {},
        "category_support": {},
    }
    assert category_metrics([], [], [], []) == empty
    assert category_metrics([1, 0], [1, 0], [[], None], [[], []]) == empty  # no code at all
    no_positive = category_metrics([1, -1], [0, 0], [["S2", "S10"], ["S3"]], [[], []])  # unparseable: no codes
    assert no_positive == empty | {"false_positives": {"S2": 1, "S10": 1}, "category_support": {"S2": 0, "S10": 0}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        nothing_predicted = category_metrics([0, 0], [1, 1], [[], []], [["S1"], ["S1", "S2"]])
    assert nothing_predicted["category_precision"] == 0.0 and nothing_predicted["false_negative_rates"] == {
        "S1": 1.0,
        "S2": 1.0,
    }


def test_thresholds_keep_their_semantics_on_sklearn_curves():
    from hf_barred.evaluation.metrics.calibration import threshold_for_f1, threshold_for_fpr

    # F1 = 1/3 at 0.6 (tp 1, fp 3) and at 0.1 (tp 2, fp 8): the tie goes to the higher threshold. From sklearn's
    # precision and recall, 2PR / (P + R) is 0.33333333333333337 at 0.1 and would pick it.
    scores = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.15, 0.1]
    labels = [0, 0, 0, 1, 0, 0, 0, 0, 0, 1]
    assert threshold_for_f1(scores, labels) == 0.6
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn's roc_curve warns on one class: silenced, rates of 0
        assert threshold_for_f1([0.2, 0.7, 0.7], [0, 0, 0]) == 0.7  # F1 0 everywhere: the first (highest)
        assert threshold_for_f1([0.2, 0.7], [1, 1]) == 0.2
        assert threshold_for_fpr([0.2, 0.7], [1, 1], target_fpr=0.0) == 0.2  # no negative: FPR 0 everywhere
        assert threshold_for_fpr([0.2, 0.7], [0, 0], target_fpr=0.0) == 0.7 + 1e-6  # nothing within: above all
        assert threshold_for_fpr([0.2, 0.7], [0, 0], target_fpr=0.5) == 0.7
    assert threshold_for_f1([], []) == threshold_for_fpr([], [], 0.1) == 0.5


def test_pr_curve_is_sklearns_reversed_and_keeps_recall_0_without_violations():
    from sklearn.metrics import precision_recall_curve

    from hf_barred.evaluation.metrics.calibration import calibration_summary, pr_curve

    rng = np.random.default_rng(0)
    labels, scores = rng.integers(0, 2, 50), rng.random(50).round(2)
    curve = pr_curve(scores, labels)
    precision, recall, thresholds = precision_recall_curve(labels, scores)
    assert curve["thresholds"] == sorted(set(scores.tolist()), reverse=True) == thresholds[::-1].tolist()
    assert (curve["precision"], curve["recall"]) == (precision[-2::-1].tolist(), recall[-2::-1].tolist())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # sklearn warns and sets the recall to 1: here it stays 0
        none = pr_curve([0.3, 0.8, 0.8], [0, 0, 0])
        summary = calibration_summary([0.3, 0.8], [0, 0], threshold=0.5)
    assert none == {"thresholds": [0.8, 0.3], "precision": [0.0, 0.0], "recall": [0.0, 0.0], "average_precision": 0.0}
    assert (summary["false_positive_rate"], summary["true_positive_rate"], summary["average_precision"]) == (
        0.5,
        0.0,
        0.0,
    )
    assert pr_curve([], []) == {"thresholds": [], "precision": [], "recall": [], "average_precision": 0.0}
    assert calibration_summary([], [], 0.5) == {
        "ece": 0.0,
        "average_precision": 0.0,
        "threshold": 0.5,
        "false_positive_rate": 0.0,
        "true_positive_rate": 0.0,
        "reliability": [],
    }


def test_reliability_bins_close_on_the_left_unlike_calibration_curve():
    from sklearn.calibration import calibration_curve

    from hf_barred.evaluation.metrics.calibration import reliability_bins

    rng = np.random.default_rng(1)
    labels, scores = rng.integers(0, 2, 200), rng.random(200)  # no score on an edge: the same bins as sklearn
    prob_true, prob_pred = calibration_curve(labels, scores, n_bins=10)
    table = reliability_bins(scores, labels)
    assert [b["positive_rate"] for b in table] == pytest.approx(prob_true.tolist())
    assert [b["mean_score"] for b in table] == pytest.approx(prob_pred.tolist())
    # on an edge they differ: 0.5 is in [0.5, 0.6) here, in [0.4, 0.5] for sklearn
    assert [b["low"] for b in reliability_bins([0.5], [1])] == [0.5]
    assert calibration_curve([1, 0], [0.5, 0.45], n_bins=10)[1].tolist() == [0.475]


def test_report_with_scores_has_calibration_figures(tmp_path):
    labels = [0, 0, 1, 1, 1, 0, 1, 0] * 5
    scores = [0.1, 0.3, 0.8, 0.7, 0.4, 0.6, 0.9, 0.2] * 5
    metrics = binary_metrics([int(s >= 0.5) for s in scores], labels)
    paths = write_report(
        tmp_path,
        metrics,
        label_names=["safe", "unsafe"],
        subject={"model": "/a/long/path/guard"},
        dataset={"name": "/data/xstest.csv"},
        references=labels,
        scores=scores,
        threshold=0.5,
    )
    assert {"reliability", "score_histograms", "pr_curve"} <= set(paths)
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["metrics"]["calibration"]["false_positive_rate"] == pytest.approx(0.25)
    assert "| ece |" in (tmp_path / "report.md").read_text()
    small = write_report(tmp_path / "small", binary_metrics([1, 0], [1, 0]), subject={"model": "m"})
    assert "only 2 rows: these figures are not a reliable estimate" in Path(small["report.md"]).read_text()
