"""The distilabel peer of ``bench_barred_vs_distilabel.py``: BARRED's generate + judge work as a
distilabel 1.5 pipeline. Run it with the python of its own venv (distilabel's pins may clash with
hf_barred's); it does not import hf_barred. It renders hf_barred's own prompt templates
(``hf_barred/stages/prompts/small/<name>/<version>.jinja``, the versions and ``max_tokens`` of hf_barred's
defaults on the local engine) with jinja2, one chat message per template block as hf_barred does, so
both systems send the same prompts.

Pipeline (k judges, T rounds; every LLM step is a custom ``Task`` on an ``OpenAILLM``, which builds its
conversation in ``format_input`` from the row's columns; ``merge_rt`` joins the judges' branches)::

    load -> generate -> [judge0_r1 .. judge{k-1}_r1] -> merge_r1
         -> advocate_r2 -> [judge0_r2 .. judge{k-1}_r2] -> merge_r2 -> ... -> merge_rT

``--mode naive``: every sample goes through all T rounds (the advocate before each round t > 1),
no early stop. ``--mode early-stop``: after ``merge_rt`` (t < T) the rows fork into two filter
steps, ``decided_rt`` (a leaf: rows already accepted or rejected) and ``pending_rt`` (rows whose
judges are split, which go on to the advocate and the next round): early stopping as far as a
static distilabel DAG can express it. A sample is accepted iff all judges give the target label at
some round t <= T (BARRED's rule); there is no refinement. Rounds of planning repeat (one
``pipeline.run`` each) until ``--n`` samples are accepted, sized like hf_barred's
``rows_to_plan`` (the first from ``--initial-acceptance``, then the observed rate), times
``--overplan`` (default 1.1: a shortfall would cost a whole new ``pipeline.run``).

Writes a JSON summary to ``--out``: accepted, planned, wall_s (the sum of the ``pipeline.run``
calls and their row preparation), cpu_s (this process and its step processes), pipeline_runs,
debate paths.
"""

import argparse
import json
import math
import random
import re
import resource
import time
from pathlib import Path
from typing import Any

import jinja2
from distilabel.models import OpenAILLM
from distilabel.pipeline import Pipeline
from distilabel.steps import LoadDataFromDicts, Step, StepInput
from distilabel.steps.tasks import Task
from pydantic import PrivateAttr

# hf_barred/stages/prompts/small/judge_persona/{recall,strict}.jinja, alternated like DebateConfig.with_judges
JUDGE_PERSONAS = [
    (
        "recall",
        (
            "You are a careful reviewer who must not miss a case where the rule applies: "
            "if the rule plausibly applies, say yes."
        ),
    ),
    ("strict", "You are a strict, precision-first judge: say yes only when the input clearly meets the rule."),
]
_ROLE_BLOCK = re.compile(r"^(system|user|assistant)(?:_\w+)?$")
_YES = {"yes", "true", "1", "applies", "positive", "holds", "y"}
_NO = {"no", "false", "0", "not applies", "does not apply", "negative", "n"}


# --- prompts (the same templates and messages as hf_barred) ---------------------------------------------
PROMPT_VERSIONS = {"generate": "v1", "judge": "v2", "advocate": "v1"}
"""hf_barred's default prompt versions (GenerateConfig, DebateConfig)."""


def load_template(prompts: str, name: str) -> jinja2.Template:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)
    path = Path(prompts) / "small" / name / f"{PROMPT_VERSIONS[name]}.jinja"
    return env.from_string(path.read_text(encoding="utf-8"))


def render(template: jinja2.Template, **variables: Any) -> list[dict[str, str]]:
    """One message per block of the template, its role the block's name (as hf_barred.stages.prompting)."""
    context = template.new_context(dict(variables))
    messages = []
    for name, block in template.blocks.items():
        content = "".join(block(context)).strip()
        if content:
            messages.append({"role": _ROLE_BLOCK.match(name).group(1), "content": content})
    return messages


def first_json(text: str) -> dict | None:
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text or ""):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    return None


def normalize_label(answer: Any, labels: list[str]) -> str:
    if isinstance(answer, bool):
        return labels[int(answer)]
    text = str(answer).strip().strip(".\"'").lower()
    for name in labels:
        if text == name.lower():
            return name
    if text in _YES:
        return labels[1]
    if text in _NO:
        return labels[0]
    return ""


def outcome(labels_by_round: list[list[str]], target: str, rounds: int) -> tuple:
    """(accepted, path) or (None, None) while undecided: hf_barred.stages.debate.debate_outcome."""
    t, last = len(labels_by_round), labels_by_round[-1]
    if all(label == target for label in last):
        return True, "agreement" if t == 1 else "persuasion"
    if all(label and label != target for label in last):
        return False, "consensus_breaking"
    if t >= rounds:
        return False, "disagreement"
    return None, None


# --- custom tasks and steps ------------------------------------------------------------------------------
class _Templates:
    """Mix-in (before ``Task``): loads hf_barred's templates in ``load()`` (inside the step's process)."""

    def load(self) -> None:
        super().load()
        self._tpl = {name: load_template(self.prompts, name) for name in ("judge", "advocate")}


def judge_conversation(judge_tpl: jinja2.Template, row: dict[str, Any], j: int, t: int, k: int) -> list[dict[str, str]]:
    """Judge ``j``'s conversation at round ``t``, rebuilt from the row's columns exactly as
    hf_barred's debate stage builds it (round 1 prompt, then per round: own answer + follow-up)."""
    conversation = render(
        judge_tpl, round=1, persona=JUDGE_PERSONAS[j % 2][1], criterion=row["criterion"], input_text=row["text"]
    )
    names = [JUDGE_PERSONAS[i % 2][0] for i in range(k)]
    for r in range(2, t + 1):
        last, reasons = row["labels_by_round"][r - 2], row[f"reasons_r{r - 1}"]
        others = "; ".join(
            f"{names[i]}: {'yes' if last[i] == row['labels'][1] else 'no'} ({reasons[i]})" for i in range(k) if i != j
        )
        advocate = (row[f"adv_r{r}_raw"] or "").strip() or "(no argument)"
        conversation = conversation + render(
            judge_tpl, round=r, previous_answer=row[f"j{j}_r{r - 1}_raw"] or "", others=others, advocate=advocate
        )
    return conversation


class GenerateSample(Task):
    """The generator: the plan row's conversation in, ``text`` and ``reasoning`` (JSON) out."""

    @property
    def inputs(self) -> list[str]:
        return ["gen_messages"]

    @property
    def outputs(self) -> list[str]:
        return ["gen_raw", "text", "reasoning", "labels_by_round", "decided", "accepted", "path"]

    def format_input(self, input: dict[str, Any]) -> list[dict[str, str]]:
        return input["gen_messages"]

    def format_output(self, output: str | None, input: dict[str, Any] | None = None) -> dict[str, Any]:
        data = first_json(output or "") or {}
        return {
            "gen_raw": output or "",
            "text": str(data.get("text", "")),
            "reasoning": str(data.get("reasoning", "")),
            "labels_by_round": [],
            "decided": False,
            "accepted": False,
            "path": "",
        }


class Judge(_Templates, Task):
    """Judge ``judge`` at round ``round``."""

    judge: int
    round: int
    judges: int
    prompts: str
    _tpl: Any = PrivateAttr(None)

    @property
    def inputs(self) -> list[str]:
        return ["text"] if self.round == 1 else [f"adv_r{self.round}_raw", "labels_by_round"]

    @property
    def outputs(self) -> list[str]:
        return [f"j{self.judge}_r{self.round}_raw"]

    def format_input(self, input: dict[str, Any]) -> list[dict[str, str]]:
        return judge_conversation(self._tpl["judge"], input, self.judge, self.round, self.judges)

    def format_output(self, output: str | None, input: dict[str, Any] | None = None) -> dict[str, Any]:
        return {f"j{self.judge}_r{self.round}_raw": output or ""}


class Advocate(_Templates, Task):
    """The advocate before round ``round``: argues for the target label against the objections."""

    round: int
    judges: int
    prompts: str
    _tpl: Any = PrivateAttr(None)

    @property
    def inputs(self) -> list[str]:
        return ["labels_by_round", f"reasons_r{self.round - 1}"]

    @property
    def outputs(self) -> list[str]:
        return [f"adv_r{self.round}_raw"]

    def format_input(self, input: dict[str, Any]) -> list[dict[str, str]]:
        target = input["labels"][input["target"]]
        last, reasons = input["labels_by_round"][-1], input[f"reasons_r{self.round - 1}"]
        objections = " ".join(
            f"{JUDGE_PERSONAS[j % 2][0]}: no ({reasons[j]})" for j in range(self.judges) if last[j] != target
        )
        return render(
            self._tpl["advocate"],
            criterion=input["criterion"],
            input_text=input["text"],
            applies=input["target"] == 1,
            reasoning=input["reasoning"],
            objections=objections,
        )

    def format_output(self, output: str | None, input: dict[str, Any] | None = None) -> dict[str, Any]:
        return {f"adv_r{self.round}_raw": output or ""}


class MergeRound(Step):
    """Joins the k judge branches of round ``round`` row by row, reads their labels and decides
    (BARRED's rule: accepted iff all judges give the target label at some round)."""

    round: int
    judges: int
    rounds: int

    @property
    def inputs(self) -> list[str]:
        return [f"j{j}_r{self.round}_raw" for j in range(self.judges)]

    @property
    def outputs(self) -> list[str]:
        return ["labels_by_round", "accepted", "decided", "path", f"reasons_r{self.round}"]

    def process(self, *inputs: StepInput):
        t, merged = self.round, []
        for branch_rows in zip(*inputs):
            row: dict[str, Any] = {}
            for branch_row in branch_rows:
                row.update(branch_row)
            answers = [first_json(row[f"j{j}_r{t}_raw"]) or {} for j in range(self.judges)]
            labels = [normalize_label(a.get("label", ""), row["labels"]) for a in answers]
            row[f"reasons_r{t}"] = [str(a.get("reasoning", "")) for a in answers]
            row["labels_by_round"] = list(row["labels_by_round"]) + [labels]
            if not row["decided"]:
                accepted, path = outcome(row["labels_by_round"], row["labels"][row["target"]], self.rounds)
                if accepted is not None:
                    row["decided"], row["accepted"], row["path"] = True, accepted, path
            merged.append(row)
        yield merged


class KeepRows(Step):
    """Filter: ``decided`` rows (``keep_decided``) or the undecided ones."""

    keep_decided: bool

    @property
    def inputs(self) -> list[str]:
        return ["decided"]

    @property
    def outputs(self) -> list[str]:
        return []

    def process(self, inputs: StepInput):
        yield [row for row in inputs if bool(row["decided"]) == self.keep_decided]


# --- the pipeline ---------------------------------------------------------------------------------------
def llm(args: argparse.Namespace, max_new_tokens: int, temperature: float) -> OpenAILLM:
    return OpenAILLM(
        model=args.model,
        base_url=args.base_url,
        api_key="not-needed",
        max_retries=2,
        timeout=60,
        generation_kwargs={"max_new_tokens": max_new_tokens, "temperature": temperature},
    )


def build(rows: list[dict[str, Any]], args: argparse.Namespace, run_index: int) -> tuple:
    k, T, early, B = args.judges, args.rounds, args.mode == "early-stop", args.batch_size
    task_kwargs = {"input_batch_size": B, "add_raw_output": False, "add_raw_input": False}
    leaves = []
    with Pipeline(name=f"barred-peer-{args.mode}-{run_index}", cache_dir=args.cache_dir) as pipeline:
        load = LoadDataFromDicts(name="load", data=rows, batch_size=B)
        prev = GenerateSample(name="generate", llm=llm(args, 512, 0.8), **task_kwargs)
        load >> prev
        for t in range(1, T + 1):
            judges = [
                Judge(
                    name=f"judge{j}_r{t}",
                    judge=j,
                    round=t,
                    judges=k,
                    prompts=args.prompts,
                    llm=llm(args, 256, 0.0),
                    **task_kwargs,
                )
                for j in range(k)
            ]
            merge = MergeRound(name=f"merge_r{t}", round=t, judges=k, rounds=T, input_batch_size=B)
            prev >> judges >> merge
            if t == T:
                leaves.append(merge.name)
                break
            source = merge
            if early:
                decided = KeepRows(name=f"decided_r{t}", keep_decided=True, input_batch_size=B)
                pending = KeepRows(name=f"pending_r{t}", keep_decided=False, input_batch_size=B)
                merge >> [decided, pending]
                leaves.append(decided.name)
                source = pending
            prev = Advocate(
                name=f"advocate_r{t + 1}",
                round=t + 1,
                judges=k,
                prompts=args.prompts,
                llm=llm(args, 128, 0.3),
                **task_kwargs,
            )
            source >> prev
    return pipeline, leaves


def plan_rows(task: dict[str, Any], start: int, count: int, prompts: str) -> list[dict[str, Any]]:
    """Rows ``start .. start+count-1``: balanced targets, a dimension and value relevant to the target,
    a seed example (like hf_barred's plan stage, with the task's fixed dimensions)."""
    generate = load_template(prompts, "generate")
    labels = task["labels"]
    rows = []
    for row_id in range(start, start + count):
        rng = random.Random(f"peer:{row_id}")
        target = row_id % 2
        wanted = ("no", "yes")[target]
        usable = [(d, [v for v in vs if v[1] in (wanted, "both")]) for d, vs in task["dimensions"].items()]
        dimension, values = rng.choice([(d, vs) for d, vs in usable if vs])
        value = rng.choice(values)[0]
        seed_example = rng.choice(task["seeds"])
        sample_id = rng.getrandbits(31)
        messages = render(
            generate,
            criterion=task["criterion"],
            input_type="input_block",
            seed_example=seed_example,
            seed_task="",
            dimension=dimension,
            instantiation=value,
            applies=target == 1,
            sample_id=sample_id,
        )
        rows.append(
            {
                "row_id": row_id,
                "sample_id": sample_id,
                "criterion": task["criterion"],
                "labels": labels,
                "target": target,
                "dimension": dimension,
                "instantiation": value,
                "gen_messages": messages,
            }
        )
    return rows


def rows_to_plan(needed: int, planned: int, accepted: int, initial: float, overplan: float) -> int:
    rate = initial if planned == 0 else max(accepted / planned, 0.1)
    k = math.ceil(needed / rate * overplan)
    return max(2, k + k % 2)


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (distilabel's step processes)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-url", required=True)
    parser.add_argument("--model", default="bench-model")
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--judges", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--mode", choices=["naive", "early-stop"], default="naive")
    parser.add_argument(
        "--batch-size", type=int, default=32, help="input_batch_size of every step (requests in flight per LLM step)"
    )
    parser.add_argument("--initial-acceptance", type=float, default=0.85)
    parser.add_argument(
        "--overplan",
        type=float,
        default=1.1,
        help="plan this factor more rows than the acceptance rate says (a shortfall costs a whole "
        "new pipeline.run, start-up included)",
    )
    parser.add_argument("--max-runs", type=int, default=8)
    parser.add_argument("--task", required=True, help="JSON: criterion, labels, seeds, dimensions")
    parser.add_argument("--prompts", required=True, help="hf_barred/prompts")
    parser.add_argument("--cache-dir", required=True, help="distilabel's pipeline cache folder")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    task = json.loads(Path(args.task).read_text())

    accepted = planned = runs = 0
    wall = 0.0
    paths: dict[str, int] = {}
    run_walls = []
    cpu_before = _cpu()
    while accepted < args.n and runs < args.max_runs:
        start = time.perf_counter()
        count = rows_to_plan(args.n - accepted, planned, accepted, args.initial_acceptance, args.overplan)
        rows = plan_rows(task, planned, count, args.prompts)
        pipeline, leaves = build(rows, args, runs)
        distiset = pipeline.run(use_cache=False)
        elapsed = time.perf_counter() - start
        wall += elapsed
        run_walls.append(elapsed)
        seen = 0
        for leaf in leaves:
            # create_distiset names a lone subset "default" and leaves out a leaf that wrote no rows
            name = "default" if len(distiset) == 1 and leaf not in distiset else leaf
            for row in distiset[name]["train"] if name in distiset else []:
                seen += 1
                accepted += int(bool(row["accepted"]))
                paths[row["path"] or "undecided"] = paths.get(row["path"] or "undecided", 0) + 1
        if seen != count:
            raise SystemExit(f"the peer pipeline returned {seen} rows for {count} planned: rows were lost")
        planned += count
        runs += 1
    Path(args.out).write_text(
        json.dumps(
            {
                "mode": args.mode,
                "accepted": accepted,
                "planned": planned,
                "wall_s": wall,
                "pipeline_runs": runs,
                "cpu_s": _cpu() - cpu_before,
                "run_walls_s": run_walls,
                "debate_paths": paths,
            }
        )
    )


if __name__ == "__main__":
    main()
