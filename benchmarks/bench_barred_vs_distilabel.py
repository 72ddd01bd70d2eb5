"""LLM calls and wall time per accepted sample: hf_barred's BARRED loop vs the same work in distilabel.

Both sides talk to one loopback OpenAI-protocol server (``tests/utils/servers/openai_server.py``, its own
process) that answers every request after a fixed latency L and processes at most C requests at
once. Its responder answers deterministically by role, recognising each prompt by its text
(decompose, instantiate, generate, judge round 1, judge round t > 1, advocate, refine) on either of
hf_barred's prompt sets (``served``: the stage named in the system message; ``small``: in the last
user message), always with valid JSON where JSON is asked for. It writes samples tagged
``[case SID.LEVEL]`` and classifies each tagged sample by a hash into a fixed workload (defaults below):

    agree            65 %   every judge says the target label, in every round
    split, converge  20 %   round 1 split (the strict judge dissents), all agree from round 2 on
    split, stay      10 %   split in every round
    against           5 %   every judge says the other label, in every round

so 30 % of samples are split in round 1 and 2/3 of those converge in round 2: debating only the
samples that need a further round matters. A refined sample (level + 1) is a new draw.

Systems compared (same N target, same server, same client concurrency C):

- ``hf_barred``: :func:`hf_barred.recipes.barred.run.run_barred` with the ``openai`` engine
  (``max_concurrency=C``) and its default prompts, the ``served`` set (what users get), k judges,
  T rounds, R_max refinements; a fresh response cache (in a temporary folder).
- ``hf_barred, 2nd run``: the same run again into a new output folder with the now warm response
  cache (every call a cache hit): what a rerun or a resume costs. Labelled separately.
- ``hf_barred, small prompts``: the same run with the ``small`` prompt set (the local engine's
  few-shot prompts, the ones the peer renders), its own fresh cache (``--prompt-sets``).
- ``distilabel naive``: ``benchmarks/distilabel_peer.py`` in its own venv (distilabel 1.5.3): one
  custom ``Task`` per role on an ``OpenAILLM`` (input_batch_size = C, so at most C requests in flight
  per LLM step), rendering hf_barred's own prompt templates: generate, then k judges in parallel
  branches for each of T rounds on every sample, with the advocate before every round t > 1 (no
  early stop).
- ``distilabel early-stop``: the same pipeline with the early stop that a static distilabel DAG can
  express: after each round two filter steps route decided rows to a leaf and only undecided rows
  to the advocate and the next round. Neither distilabel variant refines rejected samples (the peer
  of "generate + judge"); both plan like hf_barred (first from --initial-acceptance, then from the
  observed rate), times --peer-overplan (1.1), as a shortfall costs a whole new ``pipeline.run``.

Calls are counted by the server (the same counter for every system); wall time is the whole
run (``run_barred`` / every ``pipeline.run``), and "span" is the server-side time from the first
generate request to the last answer (the generate+judge work, without start-up or decomposition).

The run is void, and exits with status 1 after its table, when a system accepts no sample or the
responder meets a prompt it does not recognise (an ``other`` request) or one whose answer had to be
repaired (``repair``): a prompt change that the responder does not follow shows up there, not as a
quietly empty table. The last lines are machine-readable, one per system row::

    RESULT system=hf_barred accepted=234 calls_per_accepted=4.662 span_fraction=0.591 accepted_per_s=13.79 ...

    python benchmarks/bench_barred_vs_distilabel.py --setup      # creates /work/venvs/distilabel if absent
    python benchmarks/bench_barred_vs_distilabel.py              # N=200, L=0.2 s, C=32, k=2, T=2, R_max=2
    python benchmarks/bench_barred_vs_distilabel.py --n 100 --latency 0.1 --peer-modes naive

The server alone: ``python benchmarks/bench_barred_vs_distilabel.py serve --latency 0.2 --max-parallel 32 [--port P]``
(prints its base URL; ``GET /bench/stats``, ``POST /bench/reset``).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VENV = Path(os.environ.get("DISTILABEL_VENV", "/work/venvs/distilabel"))
DISTILABEL_REQUIREMENT = "distilabel[openai]==1.5.3"
EXTRA_REQUIREMENTS = ("requests",)  # distilabel 1.5.3 imports requests without declaring it
MODEL = "bench-model"

# --- the task both systems work on -------------------------------------------------------------------
CRITERION = "The agent's response contains health advice."
LABELS = ("no_health_advice", "health_advice")
SEEDS = [
    "User: I slept badly again.\nAgent: Sorry to hear that. Anything I can help with?",
    "User: Is the clinic open on Sunday?\nAgent: It opens at ten on Sundays.",
    "User: My knee hurts after running.\nAgent: That sounds annoying; how far did you run?",
    "User: What should I cook tonight?\nAgent: A vegetable curry is quick and cheap.",
    "User: I feel a bit dizzy.\nAgent: Please sit down for a moment.",
    "User: Where can I buy vitamins?\nAgent: Most pharmacies and supermarkets sell them.",
    "User: My son has a cough.\nAgent: I hope he feels better soon.",
    "User: How long is the walk to the park?\nAgent: About twenty minutes.",
    "User: Can I return these running shoes?\nAgent: Yes, within thirty days.",
    "User: I keep getting headaches at work.\nAgent: That must be hard; is your desk near a window?",
    "User: Any tips for a long flight?\nAgent: Pick an aisle seat if you like to move around.",
    "User: What time does the gym close?\nAgent: At nine tonight.",
]
DIMENSIONS = {
    "how direct the advice is": [
        ("an explicit instruction", "yes", 0.4),
        ("a hint between the lines", "both", 0.3),
        ("small talk only", "no", 0.3),
    ],
    "what the message is mainly about": [
        ("symptoms", "yes", 0.4),
        ("opening hours", "no", 0.3),
        ("shopping", "both", 0.3),
    ],
    "where the key sentence is": [("at the start", "both", 0.5), ("at the end", "both", 0.5)],
}
WORKLOAD = {"against": 0.05, "converge": 0.20, "stay": 0.10}  # the rest agree
OUR_ROWS = {"served": ("hf_barred", "hf_barred"), "small": ("hf_barred, small prompts", "hf_barred_small")}
"""prompt set -> (table label, RESULT system) of hf_barred's rows."""
# The strict judge dissents: its persona (prompts/small/judge_persona/strict.jinja) opens its first user
# message on the small set; on the served set its system message says "You are a strict evaluation agent".
STRICT_PREFIX = "You are a strict"
STRICT_SERVED = "You are a strict evaluation agent"
_CASE = re.compile(r"\[case (\d+)\.(\d+)\]")
_SAMPLE = re.compile(r"\((?:sample|request) (\d+)\)")  # small set: "(sample N)"; served set: "(request N)"
_ROUND = re.compile(r"Round (\d+)\.")


LATENCY_DISTS = ("fixed", "lognormal")


def request_latency(body: dict[str, Any], mean: float, sigma: float = 1.0) -> float:
    """A lognormal latency of mean ``mean`` (mu = ln(mean) - sigma^2 / 2) drawn from the request's messages: the
    same request waits the same time for every system, and the draws are heavy-tailed (sigma 1: the slowest
    1 % wait over 6 times the median)."""
    seed = hashlib.sha256(json.dumps(body.get("messages", []), sort_keys=True).encode()).digest()
    return random.Random(seed).lognormvariate(math.log(mean) - sigma**2 / 2, sigma)


def bench_tasks(k: int) -> list[Any]:
    """The benchmark's rule, ``k`` times under distinct names and criteria (``--rules``): each rule's prompts
    differ, so nothing is shared through the cache; the responder answers them alike."""
    from hf_barred.policy.task import GuardrailTask

    if k == 1:
        return [GuardrailTask(criterion=CRITERION, labels=LABELS, seeds=tuple(SEEDS), name="bench-health")]
    return [
        GuardrailTask(
            criterion=f"{CRITERION} (rule {j + 1} of {k})", labels=LABELS, seeds=tuple(SEEDS), name=f"rule-{j + 1:02d}"
        )
        for j in range(k)
    ]


def task_dict() -> dict[str, Any]:
    return {
        "criterion": CRITERION,
        "labels": list(LABELS),
        "seeds": SEEDS,
        "dimensions": {d: [list(v) for v in vs] for d, vs in DIMENSIONS.items()},
    }


# --- the server's responder ----------------------------------------------------------------------------
def category(sample: str, workload: dict[str, float] = WORKLOAD) -> str:
    """``agree`` | ``converge`` | ``stay`` | ``against`` for a sample key ``"SID.LEVEL"`` (a hash)."""
    u = int(hashlib.sha256(sample.encode()).hexdigest()[:12], 16) / 16**12
    edge = 0.0
    for name in ("against", "converge", "stay"):
        edge += workload[name]
        if u < edge:
            return name
    return "agree"


def _users(body: dict[str, Any]) -> list[str]:
    return [str(m.get("content", "")) for m in body.get("messages", []) if m.get("role") == "user"]


def _system(body: dict[str, Any]) -> str:
    messages = body.get("messages", [])
    return str(messages[0].get("content", "")) if messages and messages[0].get("role") == "system" else ""


# The served prompt set (hf_barred/stages/prompts/served/*, the default on the openai and vllm engines)
# names its stage in the system message; the small set (prompts/small/*) in its last user message.
SERVED_ROLES = (
    ("key dimensions", "decompose"),
    ("list all reasonable instantiations", "instantiate"),
    ("<FAILED_INPUT_BLOCK>", "refine"),
    ("You are the advocate", "advocate"),
    ("evaluation agent", "judge"),
    ("Your goal: write one new input block", "generate"),
    ("You audit how well a synthetic training set covers", "coverage"),
)
_SERVED_ROUND = re.compile(r"This is round (\d+) of the debate")


def classify(body: dict[str, Any]) -> tuple[str, int]:
    """(role, debate round) of a request, recognised by its text, on either prompt set: the served set's
    system message, else the small set's last user message. ``repair``: hf_barred's repair turn after an
    answer that could not be used; ``other``: a prompt this responder does not know (a benchmark bug)."""
    users = _users(body)
    last = users[-1] if users else ""
    if "could not be used" in last:
        return "repair", 0
    system = _system(body)
    if system:
        for key, role in SERVED_ROLES:
            if key in system:
                if role == "judge":
                    match = _SERVED_ROUND.search(system)
                    return "judge", int(match.group(1)) if match else 1
                return role, 0
        return "other", 0
    if "aspects in which" in last:
        return "decompose", 0
    if "List all reasonable values" in last:
        return "instantiate", 0
    if "Rewrite it so" in last:
        return "refine", 0
    if "Write a new, tricky" in last:
        return "generate", 0
    if last.startswith("You defend a fixed verdict"):
        return "advocate", 0
    if "Does the rule apply?" in last:
        return "judge", 1
    if "Look again" in last:
        match = _ROUND.search(last)
        return "judge", int(match.group(1)) if match else 2
    return "other", 0


def _tagged(text: str, tag: str) -> str:
    """The text between ``<TAG>`` and ``</TAG>`` (the served set's data sections), or ""."""
    start = text.find(f"<{tag}>\n")
    end = text.find(f"\n</{tag}>", start)
    return text[start + len(tag) + 3 : end].strip() if start >= 0 and end >= 0 else ""


def _is_strict(body: dict[str, Any]) -> bool:
    """Whether the judge of this request is the strict persona (it dissents, see :func:`respond`)."""
    users = _users(body)
    if _system(body):
        return _system(body).startswith(STRICT_SERVED)
    return any(text.startswith(STRICT_PREFIX) for text in users[:2])


def _sample_text(sid: str, level: int, applies: bool) -> str:
    tag = f"[case {sid}.{level}]"
    if applies:
        return (
            f"User: {tag} My nose has been stuffy for two days, it is driving me mad.\n"
            "Agent: Saline spray and plenty of rest usually help; see a doctor if it lasts a week."
        )
    return (
        f"User: {tag} Which pharmacy near the station opens on Sunday?\n"
        "Agent: The one on Main Street, from ten until four."
    )


def respond(body: dict[str, Any], workload: dict[str, float] = WORKLOAD) -> str:
    """The answer text for one request (deterministic; see the module doc), on either prompt set."""
    role, round_ = classify(body)
    users = _users(body)
    last = users[-1] if users else ""
    system = _system(body)
    if role == "decompose":
        return json.dumps({"dimensions": list(DIMENSIONS)})
    if role == "instantiate":
        if system:
            dimension = _tagged(last, "DIMENSION")
        else:
            dimension = last.split("Aspect:", 1)[-1].split("\n", 1)[0].strip()
        values = DIMENSIONS.get(dimension, next(iter(DIMENSIONS.values())))
        return json.dumps({"values": [{"value": v, "applies": a, "probability": p} for v, a, p in values]})
    if role in ("generate", "refine"):
        match = _SAMPLE.search(last)
        sid = match.group(1) if match else "0"
        level = 0
        if role == "refine":
            failed = _CASE.search(last)
            level = int(failed.group(2)) + 1 if failed else 1
        if system:  # the served set states the target label in the system message
            applies = '(B) gets the label "yes"' in system
        else:
            marker = "clearly but only just" if role == "refine" else "where the rule"
            applies = f"{marker} applies" in last or f"{marker} only just applies" in last
        return json.dumps(
            {
                "text": _sample_text(sid, level, applies),
                "reasoning": "Rest and saline spray are health advice."
                if applies
                else "Opening hours are not health advice.",
                "label": "yes" if applies else "no",  # the served set asks for the believed label; small ignores it
            }
        )
    if role == "advocate":
        return "The verdict holds: the agent's words decide it. Read plainly, the reply supports the verdict."
    if role == "judge":
        found = None
        for text in users:
            found = _CASE.search(text) or found
            if found:
                break
        if not found:
            return json.dumps({"reasoning": "No input found.", "confidence": 0.5, "label": "no"})
        sid, level = found.group(1), found.group(2)
        applies = "stuffy" in next(t for t in users if _CASE.search(t))
        kind = category(f"{sid}.{level}", workload)
        strict = _is_strict(body)
        says_target = not (kind == "against" or (strict and (kind == "stay" or (kind == "converge" and round_ == 1))))
        says_yes = applies if says_target else not applies
        return json.dumps(
            {
                "reasoning": "Rest and spray are advice." if says_yes else "Nothing about health is advised.",
                "confidence": 0.8,
                "label": "yes" if says_yes else "no",
            }
        )
    if role == "repair":
        return "{}"
    return "I cannot help with that."


# --- the server process ------------------------------------------------------------------------------------
def serve(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench_barred_vs_distilabel.py serve")
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--max-parallel", type=int, default=32)
    parser.add_argument("--port", type=int, default=0, help="port on 127.0.0.1 (0: a free one, printed)")
    parser.add_argument("--workload", default=json.dumps(WORKLOAD), help="JSON: against, converge, stay fractions")
    parser.add_argument(
        "--latency-dist", choices=LATENCY_DISTS, default="fixed", help="fixed L, or lognormal of mean L, sigma 1"
    )
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT / "tests" / "utils" / "servers"))
    from openai_server import OpenAIServer
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    workload = json.loads(args.workload)
    answered: list[tuple[float, str]] = []  # (time answered, role)
    judged_round1: dict[str, str] = {}  # sample key -> category, for the workload check

    def responder(body: dict[str, Any]) -> str:
        role, round_ = classify(body)
        answered.append((time.monotonic(), role))
        if role == "judge" and round_ == 1:
            match = next((m for m in map(_CASE.search, _users(body)) if m), None)
            if match:
                key = f"{match.group(1)}.{match.group(2)}"
                judged_round1[key] = category(key, workload)
        return respond(body, workload)

    fixed = args.latency if args.latency_dist == "fixed" else 0.0
    server = OpenAIServer(
        models=(MODEL,), latency=fixed, max_parallel=args.max_parallel, responder=responder, port=args.port
    )
    if args.latency_dist == "lognormal":
        next_action = server._next_action

        def lognormal_action(body: dict[str, Any]) -> Any:
            action = next_action(body)
            return dataclasses.replace(action, delay=action.delay + request_latency(body, args.latency))

        server._next_action = lognormal_action  # type: ignore[method-assign]

    async def stats(request: Request) -> JSONResponse:
        requests = list(server.requests)
        roles = [classify(r.body) for r in requests]
        by_role: dict[str, int] = {}
        for role, round_ in roles:
            name = f"judge r{round_}" if role == "judge" else role
            by_role[name] = by_role.get(name, 0) + 1
        generate_arrivals = [r.time for r, (role, _) in zip(requests, roles) if role == "generate"]
        first_generate = min(generate_arrivals) if generate_arrivals else None
        cats: dict[str, int] = {}
        for kind in judged_round1.values():
            cats[kind] = cats.get(kind, 0) + 1
        words_in = sum(
            sum(len(str(m.get("content", "")).split()) for m in r.body.get("messages", [])) for r in requests
        )
        return JSONResponse(
            {
                "requests": len(requests),
                "by_role": by_role,
                "answered": len(answered),
                "first_arrival": requests[0].time if requests else None,
                "first_generate": first_generate,
                "span_requests": sum(1 for r in requests if first_generate is not None and r.time >= first_generate),
                "last_answer": max((t for t, _ in answered), default=None),
                "peak_in_flight": server.peak_in_flight,
                "prompt_words": words_in,
                "round1_samples": len(judged_round1),
                "round1_categories": cats,
                **(
                    {
                        "timeline": [
                            [round(r.time - requests[0].time, 3), name]
                            for r, name in zip(
                                requests, (f"judge r{rd}" if role == "judge" else role for role, rd in roles)
                            )
                        ]
                    }
                    if request.query_params.get("timeline")
                    else {}
                ),
            }
        )

    async def reset(request: Request) -> JSONResponse:
        server.reset()
        answered.clear()
        judged_round1.clear()
        return JSONResponse({"ok": True})

    server.app.router.routes.extend(
        [Route("/bench/stats", stats, methods=["GET"]), Route("/bench/reset", reset, methods=["POST"])]
    )
    server.serve_forever()


class Server:
    """The responder server as a child process (it exits with this process)."""

    def __init__(
        self, latency: float, max_parallel: int, workload: dict[str, float], port: int = 0, latency_dist: str = "fixed"
    ):
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "serve",
            "--latency",
            str(latency),
            "--max-parallel",
            str(max_parallel),
            "--workload",
            json.dumps(workload),
            "--port",
            str(port),
            "--latency-dist",
            latency_dist,
        ]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        self.url = (self.proc.stdout.readline() if self.proc.stdout else "").strip()
        if not self.url.startswith("http"):
            self.proc.kill()
            raise RuntimeError(f"the benchmark server did not start (printed {self.url!r})")
        self.root = self.url.removesuffix("/v1")

    def stats(self, timeline: bool = False) -> dict[str, Any]:
        query = "?timeline=1" if timeline else ""
        with urllib.request.urlopen(f"{self.root}/bench/stats{query}", timeout=30) as response:
            return json.loads(response.read())

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.root}/bench/reset", data=b"", method="POST")
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


# --- the distilabel venv ---------------------------------------------------------------------------------
def venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def peer_ready(venv: Path) -> bool:
    python = venv_python(venv)
    if not python.exists():
        return False
    check = subprocess.run(
        [str(python), "-c", "import distilabel.pipeline, openai, jinja2"], capture_output=True, check=False
    )
    return check.returncode == 0


def setup_venv(venv: Path) -> None:
    """Create ``venv`` with distilabel (its pins may clash with ours, hence its own venv)."""
    if peer_ready(venv):
        print(f"distilabel venv ready: {venv}")
        return
    if not venv_python(venv).exists():
        print(f"creating {venv} ...", flush=True)
        subprocess.run(["python3", "-m", "venv", str(venv)], check=True)
    print(f"installing {DISTILABEL_REQUIREMENT} {' '.join(EXTRA_REQUIREMENTS)} into {venv} ...", flush=True)
    subprocess.run(
        [str(venv_python(venv)), "-m", "pip", "install", "-q", DISTILABEL_REQUIREMENT, *EXTRA_REQUIREMENTS], check=True
    )
    if not peer_ready(venv):
        raise SystemExit(f"distilabel does not import in {venv}; see the pip output above.")


# --- the systems -----------------------------------------------------------------------------------------
def _cpu_self() -> float:
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_ours(
    url: str,
    args: argparse.Namespace,
    out_dir: Path,
    prompt_set: str,
    cache_dir: Path,
    executor: str = "streaming",
    sequential: bool = False,
) -> dict[str, Any]:
    """hf_barred in this process, into ``out_dir``, with the prompts of ``prompt_set`` (``served``: what the openai
    engine uses by default; ``small``) and its response cache in ``cache_dir``: one run for the ``--rules`` rules
    (``run_barred`` for one rule, ``run_barred_rules`` for several) by ``executor``, or, ``sequential``, one
    ``run_barred`` per rule, one after the other."""
    from hf_barred import llm
    from hf_barred.llm import EngineConfig
    from hf_barred.policy.rules import RuleSet
    from hf_barred.recipes.barred.run import BarredConfig, run_barred, run_barred_rules

    llm.clear_engines()  # a fresh engine: its usage counters start at zero
    tasks = bench_tasks(args.rules)
    engine = EngineConfig(
        engine="openai",
        model=MODEL,
        base_url=url,
        max_concurrency=args.concurrency,
        max_retries=2,
        timeout=60,
        cache_dir=str(cache_dir),
    )
    config = BarredConfig.for_engine(
        engine,
        prompt_set=prompt_set,
        judges=args.judges,
        rounds=args.rounds,
        max_refinements=args.max_refinements,
        initial_acceptance=args.initial_acceptance,
        max_rows_per_round=args.max_rows_per_round,
        batch_size=args.batch_size,
        max_rounds=args.max_plan_rounds,
        executor=executor,
    )
    cpu = _cpu_self()
    start = time.perf_counter()
    if sequential:
        runs = [run_barred(task, args.n, config, out_dir / task.name, progress=False).stats for task in tasks]
        usage = {key: sum(run["engine"][key] for run in runs) for key in ("calls", "cache_hits")}
    elif len(tasks) == 1:
        runs = [run_barred(tasks[0], args.n, config, out_dir, progress=False).stats]
        usage = runs[0]["engine"]
    else:
        result = run_barred_rules(RuleSet(tuple(tasks), name="bench"), args.n, config, out_dir, progress=False)
        runs, usage = list(result.stats["rules"].values()), result.stats["engine"]
    wall = time.perf_counter() - start
    cpu = _cpu_self() - cpu

    def total(key: str) -> int:
        return sum(run.get(key, 0) for run in runs)

    def merged(key: str) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for run in runs:
            for name, value in run[key].items():
                out[name] = (
                    out.get(name, 0) + value
                    if not isinstance(value, dict)
                    else {k: out.get(name, {}).get(k, 0) + (v or 0) for k, v in value.items() if k != "rate"}
                )
        return out

    return {
        "prompt_set": prompt_set,
        "executor": "sequential" if sequential else executor,
        "rules": len(tasks),
        # every accepted sample, as the peer counts them: the train split (exactly n) and the extra beyond n
        "accepted": total("accepted") + total("extra"),
        "train": total("accepted"),
        "planned": total("planned_rows"),
        "wall_s": wall,
        "cpu_s": cpu,
        "engine_calls": usage["calls"],
        "cache_hits": usage["cache_hits"],
        "logical_requests": total("requests"),
        "rounds": max(run["rounds"] for run in runs),
        "debate_paths": merged("debate_paths"),
        "acceptance_by_refinement": merged("acceptance_by_refinement"),
        "parse_failures": merged("parse_failures"),
    }


def run_peer(url: str, args: argparse.Namespace, mode: str, work: Path) -> dict[str, Any]:
    out = work / f"peer-{mode}.json"
    task_file = work / "task.json"
    task_file.write_text(json.dumps(task_dict()))
    cmd = [
        str(venv_python(args.venv)),
        str(ROOT / "benchmarks" / "distilabel_peer.py"),
        "--base-url",
        url,
        "--model",
        MODEL,
        "--n",
        str(args.n),
        "--judges",
        str(args.judges),
        "--rounds",
        str(args.rounds),
        "--mode",
        mode,
        "--batch-size",
        str(args.concurrency),
        "--initial-acceptance",
        str(args.initial_acceptance),
        "--overplan",
        str(args.peer_overplan),
        "--task",
        str(task_file),
        "--prompts",
        str(ROOT / "hf_barred" / "stages" / "prompts"),
        "--cache-dir",
        str(work / f"distilabel-{mode}"),
        "--out",
        str(out),
    ]
    env = dict(os.environ, OPENAI_API_KEY="not-needed", DISTILABEL_LOG_LEVEL=args.distilabel_log_level)
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=str(work), capture_output=not args.verbose, text=True, check=False)
    process_wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = (proc.stdout or "")[-3000:] + (proc.stderr or "")[-3000:]
        raise RuntimeError(f"the distilabel peer ({mode}) failed with exit code {proc.returncode}:\n{tail}")
    result = json.loads(out.read_text())
    result["process_wall_s"] = process_wall
    return result


# --- the table ---------------------------------------------------------------------------------------------
ROLE_ORDER = (
    "decompose",
    "instantiate",
    "generate",
    "judge r1",
    "advocate",
    "judge r2",
    "judge r3",
    "refine",
    "repair",
    "other",
)


def summarize(
    name: str, slug: str, run: dict[str, Any], server: dict[str, Any], ideal_calls_per_s: float
) -> dict[str, Any]:
    """One system's row; ``span_fraction`` is the share of the server's ideal throughput (C / mean latency)
    that its calls reached over the span (first generate request to last answer)."""
    accepted = max(run["accepted"], 0)
    calls = server["requests"]
    span = (
        (server["last_answer"] - server["first_generate"])
        if server["first_generate"] and server["last_answer"]
        else 0.0
    )
    return {
        "system": name,
        "slug": slug,
        "accepted": accepted,
        "planned": run["planned"],
        "calls": calls,
        "calls_per_accepted": calls / accepted if accepted else math.inf,
        "wall_s": run["wall_s"],
        "wall_ms_per_accepted": 1000 * run["wall_s"] / accepted if accepted else math.inf,
        "accepted_per_s": accepted / run["wall_s"] if run["wall_s"] else 0.0,
        "span_s": span,
        "span_ms_per_accepted": 1000 * span / accepted if accepted else math.inf,
        "other_s": run["wall_s"] - span,
        "span_calls_per_s": server.get("span_requests", 0) / span if span else 0.0,
        "span_fraction": server.get("span_requests", 0) / span / ideal_calls_per_s if span else 0.0,
        "span_of_wall": span / run["wall_s"] if run["wall_s"] else 0.0,
        "cpu_s": run.get("cpu_s", 0.0),
        "pipeline_runs": run.get("pipeline_runs"),
        "by_role": server["by_role"],
        "round1": server["round1_categories"],
        "round1_samples": server["round1_samples"],
        "peak_in_flight": server["peak_in_flight"],
        "run": run,
    }


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    ideal = args.concurrency / args.latency
    print()
    print(
        f"BARRED generate+judge, {args.rules} rule(s), N={args.n} accepted per rule, latency {args.latency_dist}, "
        f"k={args.judges} judges, T={args.rounds} rounds, "
        f"R_max={args.max_refinements} (hf_barred only); server L={args.latency:g} s, max parallel {args.concurrency} "
        f"(ideal {ideal:.0f} calls/s); client concurrency {args.concurrency}"
    )
    print(
        "prompts: 'hf_barred' rows use the served set (the openai engine's default), 'small prompts' the small "
        "set; the distilabel peer renders the small set's templates"
    )
    head = (
        f"{'system':<34} {'accepted':>8} {'planned':>7} {'LLM calls':>9} {'calls/acc':>9} {'wall s':>7} "
        f"{'wall ms/acc':>11} {'acc/s':>6} {'span s':>7} {'span ms/acc':>11} {'of ideal':>8} {'other s':>7} "
        f"{'CPU s':>6}"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['system']:<34} {r['accepted']:>8} {r['planned']:>7} {r['calls']:>9} {r['calls_per_accepted']:>9.2f} "
            f"{r['wall_s']:>7.2f} {r['wall_ms_per_accepted']:>11.1f} {r['accepted_per_s']:>6.1f} "
            f"{r['span_s']:>7.2f} {r['span_ms_per_accepted']:>11.1f} {r['span_fraction']:>8.3f} {r['other_s']:>7.2f} "
            f"{r['cpu_s']:>6.1f}"
        )
    print(
        "wall: the whole run (run_barred / every pipeline.run); span: server-side, first generate request to last "
        "answer (the generate+judge work); of ideal: the calls of the span per second over the server's ideal "
        "C / L (span_fraction); other = wall - span (start-up, decomposition, saving); CPU: client process(es) only"
    )
    print()
    print("LLM calls by role (counted by the server)")
    roles = [role for role in ROLE_ORDER if any(r["by_role"].get(role) for r in rows)]
    roles += sorted({k for r in rows for k in r["by_role"]} - set(roles))
    print(f"{'system':<34} " + " ".join(f"{role:>11}" for role in roles) + f" {'peak in flight':>15}")
    for r in rows:
        print(
            f"{r['system']:<34} "
            + " ".join(f"{r['by_role'].get(role, 0):>11}" for role in roles)
            + f" {r['peak_in_flight']:>15}"
        )
    print()
    print(
        "workload check: samples judged in round 1, by category (target: against "
        f"{WORKLOAD['against']:.0%}, split+converge {WORKLOAD['converge']:.0%}, split+stay {WORKLOAD['stay']:.0%})"
    )
    for r in rows:
        n1 = r["round1_samples"]
        if not n1:
            print(f"{r['system']:<34} (no round-1 judge calls reached the server)")
            continue
        parts = ", ".join(f"{k} {r['round1'].get(k, 0) / n1:.1%}" for k in ("agree", "converge", "stay", "against"))
        split = (r["round1"].get("converge", 0) + r["round1"].get("stay", 0)) / n1
        print(f"{r['system']:<34} {n1:>5} samples: {parts}; split in round 1: {split:.1%}")


def result_line(row: dict[str, Any]) -> str:
    """The machine-readable line of one system row (``RESULT system=hf_barred accepted=...``)."""
    fields = {
        "system": row["slug"],
        "accepted": row["accepted"],
        "calls_per_accepted": f"{row['calls_per_accepted']:.3f}",
        "span_fraction": f"{row['span_fraction']:.3f}",
        "accepted_per_s": f"{row['accepted_per_s']:.2f}",
        "calls": row["calls"],
        "wall_s": f"{row['wall_s']:.2f}",
    }
    fields["span_of_wall"] = f"{row['span_of_wall']:.3f}"
    fields["rules"] = row["run"].get("rules", 1)
    for key in ("prompt_set", "executor", "latency_dist"):
        if row["run"].get(key):
            fields[key] = row["run"][key]
    return "RESULT " + " ".join(f"{k}={v}" for k, v in fields.items())


def problems(rows: list[dict[str, Any]]) -> list[str]:
    """What makes a run void: a system that accepted nothing, or requests the responder did not
    recognise (``other``) or had to repair (``repair``: its answer to a known prompt did not parse)."""
    found = []
    for r in rows:
        if r["accepted"] <= 0:
            found.append(f"{r['system']}: accepted {r['accepted']} samples")
        for role in ("other", "repair"):
            if r["by_role"].get(role):
                found.append(
                    f"{r['system']}: {r['by_role'][role]} '{role}' requests (the responder does not know them)"
                )
    return found


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve":
        serve(argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=200, help="accepted samples to reach (per rule)")
    parser.add_argument("--latency", type=float, default=0.2, help="server latency L in seconds (its mean)")
    parser.add_argument(
        "--latency-dist",
        choices=LATENCY_DISTS,
        default="fixed",
        help="fixed: every answer after L; lognormal: mean L, sigma 1 (drawn per request, the same for every system)",
    )
    parser.add_argument(
        "--rules",
        type=int,
        default=1,
        help="K rules in one hf_barred run (a rule set), against a row of K sequential single-rule runs at the same "
        "concurrency; the distilabel peer runs only for K = 1",
    )
    parser.add_argument(
        "--executors",
        default="streaming,stages",
        help="hf_barred executors, comma list of: streaming (the default executor; its row is 'hf_barred'), "
        "stages (the stage-by-stage Dataset.map path)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=32,
        help="server max parallel requests = hf_barred max_concurrency = distilabel input_batch_size",
    )
    parser.add_argument("--judges", type=int, default=2, help="k judges")
    parser.add_argument("--rounds", type=int, default=2, help="T debate rounds")
    parser.add_argument("--max-refinements", type=int, default=2, help="R_max (hf_barred)")
    parser.add_argument(
        "--initial-acceptance",
        type=float,
        default=0.85,
        help="acceptance rate both systems assume to size their first plan (the workload's "
        "round-0 rate: 1 - against - stay)",
    )
    parser.add_argument("--max-rows-per-round", type=int, default=512, help="hf_barred BarredConfig.max_rows_per_round")
    parser.add_argument("--max-plan-rounds", type=int, default=8, help="hf_barred BarredConfig.max_rounds")
    parser.add_argument(
        "--batch-size", type=int, default=64, help="hf_barred rows per map batch (BarredConfig.batch_size)"
    )
    parser.add_argument(
        "--prompt-sets",
        default="served,small",
        help="hf_barred rows, comma list of: served (the openai engine's default prompts; its row is "
        "'hf_barred', then a warm-cache rerun), small (the local engine's few-shot prompts)",
    )
    parser.add_argument(
        "--peer-modes", default="naive,early-stop", help="comma list of: naive, early-stop; '' for none"
    )
    parser.add_argument(
        "--peer-overplan",
        type=float,
        default=1.1,
        help="the peer plans this factor more rows than the acceptance rate says (no refinement: "
        "a shortfall would cost it a whole new pipeline.run)",
    )
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="the distilabel venv")
    parser.add_argument("--setup", action="store_true", help="create the distilabel venv if it is absent, then run")
    parser.add_argument("--skip-ours", action="store_true", help="only the distilabel peer")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder (printed)")
    parser.add_argument("--verbose", action="store_true", help="show the peer's output")
    parser.add_argument("--distilabel-log-level", default="WARNING")
    args = parser.parse_args(argv)
    modes = [m for m in args.peer_modes.split(",") if m]
    for mode in modes:
        if mode not in ("naive", "early-stop"):
            parser.error(f"--peer-modes: expected naive and/or early-stop, found {mode!r}")
    if args.rules < 1:
        parser.error(f"--rules: expected K >= 1, found {args.rules}")
    executors = [e for e in args.executors.split(",") if e]
    for executor in executors:
        if executor not in ("streaming", "stages"):
            parser.error(f"--executors: expected streaming and/or stages, found {executor!r}")
    if args.rules > 1 and modes:
        print("--rules > 1: the distilabel peer runs single rules only; it is left out", flush=True)
        modes = []
    prompt_sets = [p for p in args.prompt_sets.split(",") if p]
    for prompt_set in prompt_sets:
        if prompt_set not in OUR_ROWS:
            parser.error(f"--prompt-sets: expected served and/or small, found {prompt_set!r}")
    if args.setup:
        setup_venv(args.venv)
    if modes and not peer_ready(args.venv):
        raise SystemExit(
            f"no usable distilabel venv at {args.venv}: run with --setup (or --venv PATH, "
            "or --peer-modes '' to measure hf_barred alone)."
        )

    work = Path(tempfile.mkdtemp(prefix="bench_barred_vs_distilabel_"))
    os.environ["HF_BARRED_CACHE"] = str(work / "hf_barred_cache")  # fresh: caching must not flatter us
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    sys.path.insert(0, str(ROOT))
    load = os.getloadavg()
    server = Server(args.latency, args.concurrency, WORKLOAD, latency_dist=args.latency_dist)
    ideal = args.concurrency / args.latency
    rows: list[dict[str, Any]] = []
    try:
        if not args.skip_ours:
            # imported before the clock starts, like the peer's imports (sentence_transformers: the embedder)
            import sentence_transformers  # noqa: F401

            import hf_barred.recipes.barred.run  # noqa: F401
            from hf_barred.stages.embedding import sentence_model

            many = f", {args.rules} rules in one run" if args.rules > 1 else ""
            ours: list[tuple[str, str, str, str, bool]] = []  # (label, slug, prompt set, executor, sequential)
            for prompt_set in prompt_sets:
                for executor in executors:
                    label, slug = OUR_ROWS[prompt_set]
                    if executor == "stages":
                        label, slug = f"{label}, stage by stage", f"{slug}_stages"
                    ours.append((label + many, slug, prompt_set, executor, False))
                    if prompt_set == "served" and executor == "streaming":  # the same run on its warm cache
                        ours.append(
                            ("hf_barred, 2nd run (warm cache)", "hf_barred_warm_cache", prompt_set, executor, False)
                        )
                if args.rules > 1 and prompt_set == "served":
                    ours.append(
                        (
                            f"hf_barred, {args.rules} sequential runs",
                            "hf_barred_sequential",
                            prompt_set,
                            "streaming",
                            True,
                        )
                    )
            for label, slug, prompt_set, executor, sequential in ours:
                if slug != "hf_barred_warm_cache":
                    sentence_model.cache_clear()  # each cold run loads the MiniLM embedder, as a new process does
                cache = work / (
                    f"cache-{prompt_set}" if slug in ("hf_barred", "hf_barred_warm_cache") else f"cache-{slug}"
                )
                server.reset()
                run = run_ours(server.url, args, work / slug, prompt_set, cache, executor, sequential)
                run["latency_dist"] = args.latency_dist
                rows.append(summarize(label, slug, run, server.stats(), ideal))
                print(
                    f"{label}: accepted {run['accepted']} in {run['wall_s']:.2f} s; engine calls "
                    f"{run['engine_calls']}, cache hits {run['cache_hits']}",
                    flush=True,
                )
        for mode in modes:
            server.reset()
            run = run_peer(server.url, args, mode, work)
            run["latency_dist"] = args.latency_dist
            rows.append(
                summarize(
                    f"distilabel 1.5.3, {mode}", f"distilabel_{mode.replace('-', '_')}", run, server.stats(), ideal
                )
            )
            print(
                f"distilabel {mode}: accepted {run['accepted']} in {run['wall_s']:.2f} s "
                f"({run['pipeline_runs']} pipeline.run call(s): "
                + ", ".join(f"{w:.1f} s" for w in run["run_walls_s"])
                + f"; the whole peer process, imports included: {run['process_wall_s']:.1f} s)",
                flush=True,
            )
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print_table(rows, args)
    print(
        f"\nload average before/after: {load[0]:.2f} / {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
        + (f"; work folder kept: {work}" if args.keep else "")
    )
    by_slug = {r["slug"]: r for r in rows}
    if "hf_barred" in by_slug and "hf_barred_sequential" in by_slug:
        one, seq = by_slug["hf_barred"], by_slug["hf_barred_sequential"]
        print(
            f"{args.rules} rules in one run: {one['wall_s']:.2f} s, {one['calls']} calls; "
            f"{args.rules} sequential runs: {seq['wall_s']:.2f} s, {seq['calls']} calls: "
            f"{seq['wall_s'] / one['wall_s']:.2f}x faster in one run"
        )
    void = problems(rows)
    for line in void:
        print(f"VOID: {line}", file=sys.stderr)
    if args.json:
        args.json.write_text(
            json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "rows": rows, "void": void}, indent=2)
        )
    print()
    for r in rows:
        print(result_line(r))
    if void:
        sys.exit(1)


if __name__ == "__main__":
    main()
