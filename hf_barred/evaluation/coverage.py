"""``barred coverage``'s inputs and report: the decomposition of a generated folder (:func:`load_decomposition`);
``coverage.json``, ``coverage.md``, ``coverage.png`` and the rows.

Example:
    >>> from hf_barred.evaluation.coverage import markdown_table
    >>> print(markdown_table({"coverage": 0.5, "covered": 1, "determined": 2, "undetermined": 0, "samples": 2,
    ...     "threshold": 0.5, "failed_calls": 0, "dimensions": [{"dimension": "a | b", "instantiations": 3,
    ...     "rated": 2, "covered": 1, "coverage": 0.5, "failures": 0}]}))
    | dimension | instantiations | covered / rated | coverage | failed calls |
    |---|---:|---:|---:|---:|
    | a \\| b | 3 | 1 / 2 | 50.0% | 0 |
    | **any dimension** |  | 1 / 2 | **50.0%** | 0 |
"""

from __future__ import annotations

import html
import json
import textwrap
from pathlib import Path
from typing import Any

__all__ = ["load_decomposition", "markdown_table", "plot_coverage", "write_coverage_report"]


def _cell(text: Any) -> str:
    """Table-safe text: no line breaks, pipes escaped, HTML escaped (dimension names are LLM output)."""
    return html.escape(" ".join(str(text).split()), quote=False).replace("|", "\\|")


def _share(value: Any) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def load_decomposition(dataset_dir: str | Path) -> tuple[str, tuple[tuple[str, tuple[str, ...]], ...]]:
    """``(criterion, dimensions)`` of a ``barred generate`` output folder: its ``task.yaml`` and the
    ``decomposition`` parquet (rows that failed or have no instantiation are left out)."""
    from ..policy.task import GuardrailTask
    from ..recipes.barred.writer import DATA_FILES

    folder = Path(dataset_dir)
    parquet, task_file = folder / DATA_FILES["decomposition"], folder / "task.yaml"
    missing = [str(p.relative_to(folder)) for p in (parquet, task_file) if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{folder}: expected the output folder of `barred generate` (with task.yaml and "
            f"{DATA_FILES['decomposition']}), but {missing} were not found. Fix: pass the --output "
            "folder of a finished `barred generate` run."
        )
    from datasets import Dataset

    decomposition = Dataset.from_parquet(str(parquet))
    dimensions = tuple(
        (row["dimension"], tuple(dict.fromkeys(i["value"] for i in row["instantiations"] if i["value"])))
        for row in decomposition
        if row["dimension"] and not row["error"] and row["instantiations"]
    )
    if not dimensions:
        raise ValueError(
            f"{parquet}: expected dimensions with instantiations, found none usable among "
            f"{len(decomposition)} rows. Fix: rerun `barred generate` (its decomposition failed)."
        )
    return GuardrailTask.load(task_file).criterion, dimensions


def markdown_table(summary: dict[str, Any]) -> str:
    """Per-dimension coverage as a Markdown table, with the overall line last."""
    lines = ["| dimension | instantiations | covered / rated | coverage | failed calls |", "|---|---:|---:|---:|---:|"]
    for d in summary["dimensions"]:
        lines.append(
            f"| {_cell(d['dimension'])} | {d['instantiations']} | {d['covered']} / {d['rated']} | "
            f"{_share(d['coverage'])} | {d['failures']} |"
        )
    lines.append(
        f"| **any dimension** |  | {summary['covered']} / {summary['determined']} | "
        f"**{_share(summary['coverage'])}** | {summary['failed_calls']} |"
    )
    return "\n".join(lines)


def plot_coverage(summary: dict[str, Any], path: str | Path, title: str = "Coverage of the test set") -> None:
    """A horizontal bar per dimension (share of test samples it covers) and the overall share as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = summary["dimensions"]
    names = [textwrap.shorten(" ".join(d["dimension"].split()), 60, placeholder="...") for d in dims]
    values = [d["coverage"] or 0.0 for d in dims]
    fig, ax = plt.subplots(figsize=(8, 1.2 + 0.45 * len(dims)), dpi=120)
    positions = list(range(len(dims)))[::-1]
    bars = ax.barh(positions, values, color="#4c72b0", height=0.6)
    ax.set_yticks(positions, ["\n".join(textwrap.wrap(n, 34)) for n in names], fontsize=8)
    for bar, value, d in zip(bars, values, dims):
        inside = value > 0.7  # long bars carry their label inside, in white
        ax.text(
            value - 0.01 if inside else value + 0.01,
            bar.get_y() + bar.get_height() / 2,
            f"{_share(d['coverage'])} ({d['covered']}/{d['rated']})",
            va="center",
            fontsize=8,
            ha="right" if inside else "left",
            color="white" if inside else "black",
        )
    if summary["coverage"] is not None:
        ax.axvline(summary["coverage"], color="#c44e52", linestyle="--", linewidth=1.5)
        title += f": {_share(summary['coverage'])} covered by some dimension (dashed line)"
    ax.set_xlim(0, 1)
    ax.set_xlabel(f"share of test samples with an instantiation rated >= {summary['threshold']:g}")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write_coverage_report(
    output: str | Path, summary: dict[str, Any], rows: list[dict[str, Any]], meta: dict[str, Any]
) -> Path:
    """Write ``coverage.json`` (summary + meta), ``coverage.md``, ``coverage.png`` and ``coverage.jsonl``."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "coverage.json").write_text(json.dumps(meta | summary, indent=2, ensure_ascii=False) + "\n", "utf-8")
    with (out / "coverage.jsonl").open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    plot_coverage(summary, out / "coverage.png")
    overall = _share(summary["coverage"])
    lines = [
        "# Coverage of the test set by the decomposition",
        "",
        f"Dataset: `{_cell(meta.get('dataset', ''))}`; test set: `{_cell(meta.get('test_file', ''))}`; "
        f"judge: `{_cell(meta.get('model', ''))}` ({_cell(meta.get('engine', ''))}).",
        "",
        f"**{overall}** of the {summary['determined']} rated test samples are covered: some instantiation of the "
        f"decomposition is rated at least {summary['threshold']:g} for them. "
        f"{summary['undetermined']} samples are undetermined (a failed call and no covering rating); "
        f"{summary['failed_calls']} calls failed.",
        "",
        markdown_table(summary),
        "",
        "![coverage](coverage.png)",
        "",
    ]
    (out / "coverage.md").write_text("\n".join(lines), encoding="utf-8")
    return out
