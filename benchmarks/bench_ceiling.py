"""The human-label ceiling of each guardrail kind: 5-fold stratified cross-validation on human labels.

On the human-labelled sets in ``../shared/data`` (BARRED health advice and message repetition, XSTest;
``$HF_BARRED_SHARED_DATA`` points elsewhere, and XSTest falls back to the repository's copy in
``dataset_scripts/xstest``), each system is trained on four folds and scored on the fifth:

- ``minilm-lora``: the default guardrail, an all-MiniLM-L6-v2 classifier with LoRA (``transformers.Trainer``);
- ``minilm-full``: the same classifier fully fine-tuned;
- ``setfit``: SetFit on the same MiniLM (contrastive fine-tuning + logistic head), the small-data peer;
- ``smollm2-lora``: SmolLM2-135M-Instruct, a generative guardrail with LoRA (``trl.SFTTrainer``;
  ``--generative-base`` puts it on another causal LM);
- ``tfidf``: TF-IDF (word 1-2 grams) and logistic regression.

Per system and dataset: accuracy mean ± 95% CI over the folds (Student t), F1 mean, training time per
fold (wall and CPU seconds), and p50 latency at batch 1 (one forward pass per text, long inputs in
windows). Bounded by ``--max-rows`` (a stratified subsample per dataset), ``--epochs``, ``--max-length``,
``--run-folds`` (the first N of the folds: the same splits as a full run) and ``--generative-folds``
(SmolLM2 is slow on a CPU). On 2 quiet cores a MiniLM fold takes about 75 s, SetFit about 4 minutes, a
SmolLM2 fold 2-5 minutes: all systems on all folds take hours, so run them one system per process.

Example:
    $ OMP_NUM_THREADS=2 python benchmarks/bench_ceiling.py --out benchmarks/ceiling.json
    $ python benchmarks/bench_ceiling.py --datasets xstest --systems tfidf minilm-lora --folds 3
    $ python benchmarks/bench_ceiling.py --table-from a.json b.json   # one table of runs split by system
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_guardrail_cpu import latency_ms  # noqa: E402  (the same p50 timing as the CPU benchmark)

DATA = Path(os.environ.get("HF_BARRED_SHARED_DATA", ROOT.parent / "shared" / "data"))
if not DATA.is_dir():
    DATA = Path("/work/shared/data")
XSTEST_COPY = ROOT / "dataset_scripts" / "xstest" / "xstest_prompts.csv"  # used where DATA has no xstest/
XSTEST_RULE = "The request asks for help with something harmful, dangerous, violent, hateful or illegal."
DATASETS = {
    "healthe": ("barred/healthe_test.csv", "transcript", "predicate_label", "predicate"),
    "message_repetition": ("barred/message_repetition_test.csv", "transcript", "predicate_label", "predicate"),
    "xstest": ("xstest/xstest_prompts.csv", "prompt", "label", None),
}
PAPER = {"message_repetition": 0.92, "healthe": 0.79}  # fine-tuned Qwen2.5-3B, BARRED paper Table 3
SYSTEMS = ("tfidf", "minilm-lora", "minilm-full", "minilm-head", "minilm-multi", "setfit", "smollm2-lora")


def load(name: str, max_rows: int, seed: int) -> tuple[list[str], list[int], str]:
    """Texts, 0/1 labels and the rule of one dataset (a stratified subsample of ``max_rows`` if smaller)."""
    from sklearn.model_selection import train_test_split

    file, text_col, label_col, rule_col = DATASETS[name]
    path = DATA / file
    if name == "xstest" and not path.is_file():
        path = XSTEST_COPY
    if not path.is_file():
        raise SystemExit(f"error: {name}: expected {path} (set HF_BARRED_SHARED_DATA to the shared data folder).")
    rows = list(csv.DictReader(open(path, encoding="utf-8")))
    texts = [r[text_col] for r in rows]
    labels = [int(r[label_col] in ("1", "unsafe")) for r in rows]
    rule = rows[0][rule_col] if rule_col else XSTEST_RULE
    if max_rows and len(rows) > max_rows:
        texts, _, labels, _ = train_test_split(texts, labels, train_size=max_rows, stratify=labels, random_state=seed)
    return texts, labels, rule


def quiet(fn: Callable[[], Any]) -> Any:
    """Run ``fn`` without the trainers' progress prints."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        return fn()


def timed(fn: Callable[[], Any]) -> tuple[float, float]:
    """Wall and CPU seconds (this process, all threads) of ``fn()``, run quietly. CPU seconds stay
    comparable on a shared machine, where wall time depends on the other jobs."""
    wall, cpu = time.perf_counter(), time.process_time()
    quiet(fn)
    return time.perf_counter() - wall, time.process_time() - cpu


# -- systems: each returns (predictions, (train wall s, train CPU s), predict-one function) --------------------------


def run_tfidf(args, train_x, train_y, test_x, rule, workdir):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        LogisticRegression(max_iter=2000, random_state=args.seed),
    )
    seconds = timed(lambda: model.fit(train_x, train_y))
    return list(model.predict(test_x)), seconds, lambda t: model.predict_proba([t])


def _hf_guardrail(args, train_x, train_y, test_x, rule, workdir, **overrides):
    from datasets import Dataset

    from hf_barred.guardrails.guardrail import Guardrail
    from hf_barred.train import GuardrailTrainingArguments, train_guardrail

    settings = (
        dict(
            base_model="embedded",
            rule=rule,
            output_dir=str(workdir),
            num_train_epochs=args.epochs,
            learning_rate=args.learning_rate,
            per_device_train_batch_size=16,
            max_length=args.max_length,
            seed=args.seed,
            disable_tqdm=True,
            logging_strategy="no",
        )
        | overrides
    )
    training_args = GuardrailTrainingArguments(**settings)
    data = Dataset.from_dict({"text": list(train_x), "label": list(train_y)})
    seconds = timed(lambda: train_guardrail(training_args, data))
    guard = Guardrail.from_pretrained(workdir, device="cpu")
    verdicts = guard(list(test_x), batch_size=16)
    return [int(v.flagged) for v in verdicts], seconds, lambda t: guard([t], batch_size=1)


def run_minilm_lora(args, *data):
    return _hf_guardrail(args, *data)


def run_minilm_full(args, *data):
    return _hf_guardrail(args, *data, use_lora=False, learning_rate=args.full_learning_rate)


def run_smollm2_lora(args, *data):
    return _hf_guardrail(
        args,
        *data,
        model_kind="generative",
        base_model=args.generative_base,
        num_train_epochs=args.generative_epochs,
        learning_rate=3e-4,
        per_device_train_batch_size=8,
        max_length=args.generative_max_length,
    )


def run_setfit(args, train_x, train_y, test_x, rule, workdir):
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments

    from hf_barred.guardrails.loading import embedded_classifier_path

    model = SetFitModel.from_pretrained(str(embedded_classifier_path()))
    model.model_body.max_seq_length = args.max_length
    training = TrainingArguments(
        batch_size=16,
        num_epochs=1,
        num_iterations=args.setfit_iterations,
        seed=args.seed,
        show_progress_bar=False,
        output_dir=str(workdir),
        save_strategy="no",
        report_to="none",
        logging_strategy="no",
    )
    trainer = Trainer(
        model=model, args=training, train_dataset=Dataset.from_dict({"text": list(train_x), "label": list(train_y)})
    )
    seconds = timed(trainer.train)
    return [int(p) for p in model.predict(list(test_x))], seconds, lambda t: model.predict_proba([t])


def run_minilm_head(args, train_x, train_y, test_x, rule, workdir):
    """The frozen MiniLM encoder (mean pooling, what the embedded classifier base is) and a logistic-regression
    head per rule: the shared-trunk option, where one encoder pass per text serves every rule's head."""
    from sentence_transformers import SentenceTransformer
    from sklearn.linear_model import LogisticRegression

    from hf_barred.guardrails.loading import embedded_classifier_path

    encoder = quiet(lambda: SentenceTransformer(str(embedded_classifier_path()), local_files_only=True))
    encoder.max_seq_length = args.max_length

    def encode(texts):
        return encoder.encode(list(texts), normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)

    head = LogisticRegression(max_iter=2000, C=10.0, random_state=args.seed)
    seconds = timed(lambda: head.fit(encode(train_x), train_y))
    return list(head.predict(encode(test_x))), seconds, lambda t: head.predict_proba(encode([t]))


_JOINT: dict[int, tuple[Any, Any, Any, tuple[float, float]]] = {}


def _joint_model(args, fold: int) -> tuple[Any, Any, Any, tuple[float, float]]:
    """One MiniLM fine-tuned on the fold's training rows of every dataset of ``--datasets`` at once, with one
    logit per dataset's rule; each row's loss is on its own rule's logit only. Trained once per fold."""
    if fold in _JOINT:
        return _JOINT[fold]
    import torch
    from sklearn.model_selection import StratifiedKFold
    from transformers import AutoModel, AutoTokenizer

    from hf_barred.guardrails.loading import embedded_classifier_path

    rows: list[tuple[str, int, int]] = []  # (text, rule, label)
    for rule_index, name in enumerate(args.datasets):
        texts, labels, _ = load(name, args.max_rows, args.seed)
        splits = list(StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=args.seed).split(texts, labels))
        rows += [(texts[i], rule_index, labels[i]) for i in splits[fold][0]]
    torch.manual_seed(args.seed)
    path = str(embedded_classifier_path())
    tokenizer = quiet(lambda: AutoTokenizer.from_pretrained(path))
    encoder = quiet(lambda: AutoModel.from_pretrained(path))
    heads = torch.nn.Linear(encoder.config.hidden_size, len(args.datasets))
    optimizer = torch.optim.AdamW(
        [{"params": encoder.parameters(), "lr": args.full_learning_rate}, {"params": heads.parameters(), "lr": 1e-3}]
    )

    def logits(texts: Sequence[str]) -> Any:
        batch = tokenizer(list(texts), truncation=True, max_length=args.max_length, padding=True, return_tensors="pt")
        hidden = encoder(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return heads((hidden * mask).sum(1) / mask.sum(1))

    def train() -> None:
        encoder.train()
        order = torch.Generator().manual_seed(args.seed)
        for _ in range(math.ceil(args.epochs)):
            for start in range(0, len(rows), 16):
                batch = [rows[i] for i in torch.randperm(len(rows), generator=order)[start : start + 16].tolist()]
                out = logits([text for text, _, _ in batch])
                chosen = out[torch.arange(len(batch)), torch.tensor([rule for _, rule, _ in batch])]
                target = torch.tensor([float(label) for _, _, label in batch])
                loss = torch.nn.functional.binary_cross_entropy_with_logits(chosen, target)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
        encoder.eval()

    seconds = timed(train)
    _JOINT[fold] = (tokenizer, logits, torch, seconds)
    return _JOINT[fold]


def run_minilm_multi(args, train_x, train_y, test_x, rule, workdir, fold: int = 0, dataset: str = ""):
    """One multi-rule classifier for every dataset (a fine-tuned shared encoder, a head per rule): one forward
    pass per text gives every rule's score. Its training time is the joint model's, once per fold."""
    _, logits, torch, seconds = _joint_model(args, fold)
    rule_index = args.datasets.index(dataset)

    def predict(texts: Sequence[str]) -> list[int]:
        with torch.no_grad():
            scores = torch.cat([logits(texts[i : i + 16])[:, rule_index] for i in range(0, len(texts), 16)])
        return [int(x) for x in (scores > 0).tolist()]

    return predict(list(test_x)), seconds, lambda t: predict([t])


RUNNERS = {
    "tfidf": run_tfidf,
    "minilm-lora": run_minilm_lora,
    "minilm-full": run_minilm_full,
    "minilm-head": run_minilm_head,
    "minilm-multi": run_minilm_multi,
    "setfit": run_setfit,
    "smollm2-lora": run_smollm2_lora,
}


# -- cross-validation -----------------------------------------------------------------------------------


def mean_ci(values: Sequence[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% Student-t interval (0 for a single value)."""
    from scipy import stats

    mean = statistics.fmean(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, stats.t.ppf(0.975, len(values) - 1) * statistics.stdev(values) / math.sqrt(len(values))


def cross_validate(args, system: str, dataset: str, workroot: Path) -> dict[str, Any]:
    from sklearn.model_selection import StratifiedKFold

    from hf_barred.evaluation.metrics.guardrail_metrics import binary_metrics

    texts, labels, rule = load(dataset, args.max_rows, args.seed)
    folds = list(StratifiedKFold(n_splits=args.folds, shuffle=True, random_state=args.seed).split(texts, labels))
    if system == "smollm2-lora":
        folds = folds[: args.generative_folds]
    if args.run_folds:  # the first folds only (the same splits as a full run: paired with it)
        folds = folds[: args.run_folds]
    accuracies, f1s, train_seconds, train_cpu, latency = [], [], [], [], None
    for k, (train_idx, test_idx) in enumerate(folds):
        train_x, train_y = [texts[i] for i in train_idx], [labels[i] for i in train_idx]
        test_x, test_y = [texts[i] for i in test_idx], [labels[i] for i in test_idx]
        joint = {"fold": k, "dataset": dataset} if system == "minilm-multi" else {}  # one model for every dataset
        predictions, seconds, predict_one = RUNNERS[system](
            args, train_x, train_y, test_x, rule, workroot / f"{system}-{dataset}-{k}", **joint
        )
        metrics = binary_metrics(predictions, test_y)
        accuracies.append(metrics["accuracy"])
        f1s.append(metrics["f1"])
        train_seconds.append(seconds[0])
        train_cpu.append(seconds[1])
        if k == len(folds) - 1:
            latency = latency_ms(predict_one, test_x[: args.latency_texts])[0]
        print(
            f"  {system:13s} {dataset:18s} fold {k + 1}/{len(folds)}: accuracy {metrics['accuracy']:.3f} "
            f"F1 {metrics['f1']:.3f} train {seconds[0]:.1f} s ({seconds[1]:.0f} CPU-s)",
            flush=True,
        )
    accuracy, ci = mean_ci(accuracies)
    return {
        "system": system,
        "dataset": dataset,
        "rows": len(texts),
        "folds": len(folds),
        "accuracy": accuracy,
        "accuracy_ci95": ci,
        "f1": statistics.fmean(f1s),
        "train_s": statistics.fmean(train_seconds),
        "train_cpu_s": statistics.fmean(train_cpu),
        "load_average": os.getloadavg()[0],
        "p50_ms": latency,
        "fold_accuracies": accuracies,
    }


def table(results: list[dict[str, Any]]) -> str:
    head = [
        "system",
        "dataset",
        "rows",
        "folds",
        "accuracy (mean ± 95% CI)",
        "F1",
        "train s / fold",
        "train CPU-s / fold",
        "p50 ms @1",
        "paper: fine-tuned Qwen2.5-3B",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        lines.append(
            "| "
            + " | ".join(
                [
                    r["system"],
                    r["dataset"],
                    str(r["rows"]),
                    str(r["folds"]),
                    f"{r['accuracy']:.3f} ± {r['accuracy_ci95']:.3f}",
                    f"{r['f1']:.3f}",
                    f"{r['train_s']:.1f}",
                    f"{r.get('train_cpu_s', float('nan')):.0f}",
                    f"{r['p50_ms']:.1f}" if r["p50_ms"] is not None else "-",
                    f"{PAPER[r['dataset']]:.2f}" if r["dataset"] in PAPER else "-",
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=list(SYSTEMS))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--max-rows", type=int, default=200, help="Stratified subsample per dataset (0: all).")
    parser.add_argument("--epochs", type=float, default=4, help="Epochs of the MiniLM classifiers.")
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="MiniLM + LoRA learning rate.")
    parser.add_argument("--full-learning-rate", type=float, default=5e-5, help="MiniLM full fine-tuning rate.")
    parser.add_argument("--max-length", type=int, default=256, help="MiniLM window (longer inputs: windows).")
    parser.add_argument("--setfit-iterations", type=int, default=3, help="SetFit contrastive pairs per row / 2.")
    parser.add_argument("--generative-folds", type=int, default=1, help="Folds run for SmolLM2 (slow on a CPU).")
    parser.add_argument(
        "--run-folds",
        type=int,
        default=0,
        help="Run only the first N of the --folds folds (0: all), e.g. for slow peers.",
    )
    parser.add_argument("--generative-epochs", type=float, default=2)
    parser.add_argument("--generative-max-length", type=int, default=384)
    parser.add_argument(
        "--generative-base",
        default="embedded",
        help="Base of smollm2-lora ('embedded': SmolLM2-135M-Instruct; a folder or Hub id, e.g. a tiny model).",
    )
    parser.add_argument("--latency-texts", type=int, default=20, help="Texts timed one by one (last fold).")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, help="Write the results (JSON) here.")
    parser.add_argument(
        "--table-from",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="Only print the table of earlier --out files (e.g. of runs split by system).",
    )
    args = parser.parse_args(argv)
    if args.table_from:
        runs = [json.loads(path.read_text()) for path in args.table_from]
        print(table([r for run in runs for r in run["results"]]))
        print("\nwall time per run: " + ", ".join(f"{run['wall_s'] / 60:.1f} min" for run in runs))
        return 0

    import torch

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for system in args.systems:
            for dataset in args.datasets:
                results.append(cross_validate(args, system, dataset, Path(tmp)))
                if args.out:  # after each system x dataset, so a stopped run keeps what it finished
                    _write(args, results, time.perf_counter() - started)
    wall = time.perf_counter() - started
    print(table(results))
    print(f"\nwall time {wall / 60:.1f} min, {torch.get_num_threads()} threads; settings: {vars(args)}")
    if args.out:
        _write(args, results, wall)
    return 0


def _write(args: argparse.Namespace, results: list[dict[str, Any]], wall: float) -> None:
    args.out.write_text(
        json.dumps(
            {"results": results, "wall_s": wall, "settings": {k: str(v) for k, v in vars(args).items()}}, indent=2
        )
    )


if __name__ == "__main__":
    sys.exit(main())
