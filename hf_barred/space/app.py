"""The Gradio app that a Space runs: try a guardrail, browse a generated dataset.

Tab *Guardrail*: pick a guardrail (local folder or Hub id), enter a text (and a rule or a taxonomy
for policy-conditioned models), see the verdict, the score and the violated categories.
Tab *Dataset*: browse a BARRED dataset with each sample's dimension, instantiation and debate.
Everything the model wrote, and everything the user typed that an error message repeats, is shown
escaped (``html.escape``), never as live HTML (:func:`user_error`).

Example:
    >>> from hf_barred.space.app import build_demo
    >>> demo = build_demo(guardrail="outputs/guardrail", dataset="outputs/health-advice")  # doctest: +SKIP
    >>> demo.launch(server_name="127.0.0.1")  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import html
import json
from typing import Any, Optional

import gradio as gr

MAX_ROWS = 500


def user_error(message: str, *typed: object) -> gr.Error:
    """A ``gr.Error`` whose ``message`` repeats what the user ``typed`` escaped (the toast renders HTML).

    ``message`` holds ``{}`` placeholders, one per value of ``typed``; each value (and the error text
    it may carry) is HTML escaped and shortened to 500 characters.

    >>> user_error("Could not load the guardrail {}: {}", "<img src=x onerror=alert(1)>", "not found").message
    'Could not load the guardrail &lt;img src=x onerror=alert(1)&gt;: not found'
    """
    return gr.Error(message.format(*(html.escape(str(value)[:500]) for value in typed)))


@functools.lru_cache(maxsize=4)
def _load_guardrail(name: str):  # noqa: ANN202 - the Guardrail type imports torch; keep import lazy
    from ..guardrails.guardrail import Guardrail

    return Guardrail.from_pretrained(name)


def check_text(guardrail: str, text: str, rule: str, taxonomy: str) -> tuple[str, float, str]:
    """Run one text through a guardrail: (verdict HTML, score, categories)."""
    if not guardrail.strip():
        raise gr.Error("Pick a guardrail: a local folder made by `barred train` or a Hub model id.")
    if not text.strip():
        raise gr.Error("Enter a text to check.")
    try:
        model = _load_guardrail(guardrail.strip())
    except Exception as err:  # shown to the user, who can fix the name
        raise user_error("Could not load the guardrail {}: {}", guardrail, err) from err
    kwargs: dict[str, Any] = {}
    if rule.strip():
        kwargs["rule"] = rule.strip()
    if taxonomy.strip():
        kwargs["taxonomy"] = taxonomy.strip()
    [verdict] = model([text], **kwargs)
    categories = ", ".join(getattr(verdict, "categories", None) or [])
    flagged = bool(verdict.flagged)
    colour = "#b91c1c" if flagged else "#15803d"
    badge = (
        f'<div id="verdict" data-violation="{str(flagged).lower()}" style="font-size:1.4em;font-weight:600;'
        f'color:{colour}">{html.escape(str(verdict.label))}</div>'
    )
    return badge, round(float(verdict.score), 4), categories


def _load_rows(dataset: str) -> list[dict[str, Any]]:
    from datasets import load_dataset, load_from_disk

    name = dataset.strip()
    try:
        ds = load_dataset(name, split="train")
    except Exception:  # a folder written by save_to_disk
        loaded = load_from_disk(name)
        ds = loaded["train"] if hasattr(loaded, "keys") else loaded
    return ds.select(range(min(len(ds), MAX_ROWS))).to_list()


def load_samples(dataset: str) -> tuple[list[list[Any]], dict[str, Any], list[dict[str, Any]]]:
    """Rows for the table, the sample-index update, and the rows themselves (kept in state)."""
    if not dataset.strip():
        raise gr.Error("Enter a dataset: a folder written by `barred generate` or a Hub dataset id.")
    try:
        samples = _load_rows(dataset)
    except Exception as err:
        raise user_error("Could not load the dataset {}: {}", dataset, err) from err
    table = [
        [
            i,
            (r.get("text") or "")[:120],
            str(r.get("label")),
            r.get("dimension", ""),
            r.get("instantiation", ""),
            r.get("debate_path", ""),
        ]
        for i, r in enumerate(samples)
    ]
    return table, gr.update(maximum=max(len(samples) - 1, 0), value=0), samples


def render_sample(samples: list[dict[str, Any]], index: int) -> str:
    """One sample as escaped HTML: the text, its lineage and the debate transcript."""
    if not samples:
        return "<p>No dataset loaded.</p>"
    index = min(max(int(index or 0), 0), len(samples) - 1)
    row = samples[index]
    esc = lambda value: html.escape(str(value if value is not None else ""))  # noqa: E731
    parts = [
        f"<h3>Sample {index}: label <code>{esc(row.get('label'))}</code></h3>",
        f"<p><b>Dimension:</b> {esc(row.get('dimension'))}<br><b>Instantiation:</b> {esc(row.get('instantiation'))}"
        f"<br><b>Refinements:</b> {esc(row.get('refinements'))} &middot; "
        f"<b>Debate path:</b> {esc(row.get('debate_path'))}</p>",
        f"<pre style='white-space:pre-wrap'>{esc(row.get('text'))}</pre>",
        f"<p><b>Reasoning:</b> {esc(row.get('reasoning'))}</p>",
    ]
    debate = row.get("debate") or []
    if isinstance(debate, str):
        debate = json.loads(debate)
    for turn in debate:
        parts.append(f"<h4>Round {esc(turn.get('round'))}</h4>")
        if turn.get("advocate"):
            parts.append(f"<p><b>Advocate:</b> {esc(turn.get('advocate'))}</p>")
        for judge in turn.get("judges") or []:
            parts.append(
                f"<p><b>{esc(judge.get('judge'))}</b> says <code>{esc(judge.get('label'))}</code> "
                f"(confidence {esc(judge.get('confidence'))}): {esc(judge.get('reasoning'))}</p>"
            )
    return "\n".join(parts)


def build_demo(guardrail: str = "", dataset: str = "", rule: str = "", taxonomy: str = "") -> gr.Blocks:
    """The two-tab app; the arguments pre-fill the inputs."""
    with gr.Blocks(title="hf_barred guardrail demo") as demo:
        gr.Markdown(
            "# hf_barred guardrail demo\nA guardrail trained with BARRED / APT, and the data it was trained on."
        )
        with gr.Tab("Guardrail"):
            model_box = gr.Textbox(value=guardrail, label="Guardrail (local folder or Hub model id)")
            rule_box = gr.Textbox(value=rule, label="Rule (optional: overrides the guardrail's own rule)", lines=2)
            taxonomy_box = gr.Textbox(
                value=taxonomy, label="Taxonomy, S-coded (policy-conditioned guardrails)", lines=4
            )
            text_box = gr.Textbox(label="Text to check", lines=6, elem_id="text-input")
            check = gr.Button("Check", variant="primary", elem_id="check-button")
            verdict = gr.HTML(label="Verdict", elem_id="verdict-box")
            score = gr.Number(label="Violation score", elem_id="score")
            categories = gr.Textbox(label="Violated categories", elem_id="categories")
            check.click(check_text, [model_box, text_box, rule_box, taxonomy_box], [verdict, score, categories])
        with gr.Tab("Dataset"):
            data_box = gr.Textbox(value=dataset, label="Dataset (folder from `barred generate` or Hub dataset id)")
            load = gr.Button("Load")
            state = gr.State([])
            table = gr.Dataframe(
                headers=["#", "text", "label", "dimension", "instantiation", "debate path"],
                interactive=False,
                wrap=True,
            )
            index = gr.Number(value=0, precision=0, minimum=0, label="Sample #", elem_id="sample-index")
            detail = gr.HTML(elem_id="sample-detail")
            load.click(load_samples, [data_box], [table, index, state]).then(render_sample, [state, index], detail)
            index.change(render_sample, [state, index], detail)
    return demo


def main(
    guardrail: str = "", dataset: str = "", host: str = "127.0.0.1", port: Optional[int] = None, quiet: bool = False
) -> None:
    """Run the demo until interrupted, after one line saying where; ``quiet``: without Gradio's own start-up lines."""
    demo = build_demo(guardrail, dataset)
    _, local_url, _ = demo.launch(server_name=host, server_port=port, quiet=quiet, prevent_thread_lock=True)
    print(f"Demo running at {local_url} (Ctrl-C to stop)", flush=True)
    demo.block_thread()


if __name__ == "__main__":
    main()
