"""User text cannot break a card's Markdown, and the demo escapes what was typed.

The cards are rendered to HTML with markdown-it (CommonMark, as the Hub renders cards) and the
result is checked element by element: no injected heading, image, script or table cell.
"""

from __future__ import annotations

import pytest
from markdown_it import MarkdownIt

from hf_barred.hub.dataset_card import example_statistics, make_augment_card, make_dataset_card
from hf_barred.hub.markdown import fenced, inline_code, inline_text
from hf_barred.policy.task import GuardrailTask
from hf_barred.recipes.barred.run import BarredConfig

HOSTILE = "````\n# Injected heading\n<img src=x onerror=alert(1)>\n<script>alert(2)</script>\n| a | b |\n~~~\n```"


def html_of(markdown: str) -> str:
    return MarkdownIt("commonmark").enable("table").render(markdown)


def body(card) -> str:
    return card.text  # the card without its YAML front matter


def test_hostile_rule_seed_and_names_stay_inert_in_the_dataset_card():
    task = GuardrailTask(
        criterion="The rule.\n" + HOSTILE,
        labels=("ok`` <b>", "bad\n# h"),
        seeds=(HOSTILE, "a second seed"),
        name="x```<img src=y onerror=alert(3)>",
    )
    card = make_dataset_card(task, BarredConfig(), example_statistics(task))
    page = html_of(body(card))
    assert "<h1>Injected heading</h1>" not in page and "<img" not in page and "<script" not in page
    assert "&lt;img src=x onerror=alert(1)&gt;" in page  # shown, as text
    assert page.count("# Injected heading") == 2  # the rule and the seed, each inside a code block
    assert "<h1>BARRED: x" in page and "<h1>h" not in page  # the title is one heading; labels add none
    assert "```python" in card.text and 'load_dataset("path/to/x\\u0060\\u0060\\u0060<img' in card.text
    headings = [line for line in page.splitlines() if line.startswith("<h2>")]
    assert headings == [
        "<h2>The rule</h2>",
        "<h2>Configurations and splits</h2>",
        "<h2>How it was made</h2>",
        "<h2>Statistics</h2>",
        "<h2>Seeds</h2>",
        "<h2>Licence</h2>",
        "<h2>Citation</h2>",
    ]


def test_the_augment_card_escapes_its_source_and_model():
    stats = {
        "rows_original": 2,
        "rows_total": 4,
        "deleted_from": 2,
        "deleted_from_positive": 1,
        "deleted_from_negative": 1,
        "edited_existing": 0,
        "new_category": 0,
        "kept_safe": 0,
        "edit_failures": 1,
        "labels_original": {"safe": 1, "unsafe": 1},
        "labels_augmented": {"safe": 2, "unsafe": 2},
        "config": {"guideline_edit": {"engine": {"model": "m`<img src=z onerror=1>"}}},
    }
    card = make_augment_card(stats, source="data.csv\n## Owned <img src=q onerror=alert(4)>")
    page = html_of(body(card))
    assert "<img" not in page and "<h2>Owned" not in page
    assert "Source data: data.csv ## Owned &lt;img src=q onerror=alert\\(4\\)&gt;" not in page  # escapes are rendered
    assert "data.csv ## Owned &lt;img src=q onerror=alert(4)&gt;" in page
    assert "<code>m`&lt;img src=z onerror=1&gt;</code>" in page


@pytest.mark.parametrize("text", ["plain", "```", "a ```` b", "~~~~~", ""])
def test_fenced_text_renders_back_to_itself(text):
    page = html_of(fenced(text))
    assert page.startswith("<pre><code") and page.count("<pre>") == 1
    import html

    assert html.unescape(page.split(">", 2)[2].rsplit("</code>", 1)[0]) == text + "\n"


def test_inline_filters_stay_on_one_line_and_inert():
    assert html_of(inline_code("a `b` ``c``")) == "<p><code>a `b` ``c``</code></p>\n"
    assert html_of(inline_text("*x* <b>y</b>\n# z")) == "<p>*x* &lt;b&gt;y&lt;/b&gt; # z</p>\n"


def test_the_demos_errors_escape_what_the_user_typed(tmp_path):
    import gradio as gr

    from hf_barred.space.app import check_text, load_samples

    typed = str(tmp_path / "<img src=x onerror=alert(1)>")
    for call in (lambda: check_text(typed, "some text", "", ""), lambda: load_samples(typed)):
        with pytest.raises(gr.Error) as caught:
            call()
        message = caught.value.message
        assert "<img" not in message and "&lt;img src=x onerror=alert(1)&gt;" in message
