"""``barred generate``'s flags: the same names, defaults and resulting BarredConfig as the hand-written argparse
flags they replaced (the expected values below were captured from that code before the change)."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from hf_barred.cli import generate
from hf_barred.cli.flags import config_help, flag_help, from_config
from hf_barred.llm import EngineConfig
from hf_barred.recipes.barred.config import BarredConfig
from hf_barred.stages.debate import DebateConfig
from hf_barred.stages.decompose import DecomposeConfig
from hf_barred.stages.generate import GenerateConfig
from hf_barred.stages.instantiate import InstantiateConfig
from hf_barred.stages.plan import PlanConfig
from hf_barred.stages.refine import RefineConfig
from tests.utils import REPO_ROOT
from tests.utils.cli_runs import fresh_cli  # noqa: F401 (fixture)

pytestmark = pytest.mark.usefixtures("fresh_cli")

QUICKSTART = (
    "dataset_scripts/health-advice/task.yaml --n 12 --output out --max-rounds 3 --max-rows-per-round 16 "
    "--max-repairs 0 --engine-batch-size 32"
)
SERVED = (
    "task.yaml --n 1000 --output out --engine openai --base-url http://127.0.0.1:8000/v1 "
    "--model Qwen/Qwen2.5-7B-Instruct --api-key-env MY_KEY --max-concurrency 64 --timeout 30 --max-retries 2 "
    "--judges 3 --rounds 1 --max-refinements 1 --seed 7 --sample-max-tokens 300 --prompt-set small "
    "--max-repairs 2 --max-calls 5000 --max-total-tokens 2000000 --max-rounds 5 --max-rows-per-round 128 "
    "--batch-size 16 --max-failure-rate 0.25"
)
VLLM_DEFAULTS = "task.yaml --n 10 --output out --engine vllm --model m"


def _engine(**changes) -> EngineConfig:
    values = {
        "engine": "local",
        "model": "embedded",
        "base_url": None,
        "api_key_env": None,
        "max_concurrency": 32,
        "batch_size": 8,
        "threads": None,
        "dtype": "auto",
        "timeout": 120.0,
        "max_retries": 6,
        "cache_dir": None,
    }
    return EngineConfig(**(values | changes))


def _quickstart() -> BarredConfig:
    engine = _engine(batch_size=32)
    stage = {"engine": engine, "prompt_set": "small", "seed": 0, "max_repairs": 0}
    return BarredConfig(
        decompose=DecomposeConfig(**stage, max_tokens=80, max_dimensions=3),
        instantiate=InstantiateConfig(**stage, max_tokens=128, max_instantiations=3),
        plan=PlanConfig(seed=0),
        generate=GenerateConfig(**stage, max_tokens=128),
        debate=DebateConfig(**stage, max_tokens=64, judges=("recall", "strict"), rounds=2, advocate_max_tokens=40),
        refine=RefineConfig(**stage, max_tokens=128),
        max_refinements=2,
        max_rounds=3,
        max_rows_per_round=16,
        max_calls=None,
        max_total_tokens=None,
        batch_size=64,
        max_failure_rate=0.5,
    )


def _served() -> BarredConfig:
    engine = _engine(
        engine="openai",
        model="Qwen/Qwen2.5-7B-Instruct",
        base_url="http://127.0.0.1:8000/v1",
        api_key_env="MY_KEY",
        max_concurrency=64,
        timeout=30.0,
        max_retries=2,
    )
    stage = {"engine": engine, "prompt_set": "small", "seed": 7, "max_repairs": 2}
    return BarredConfig(
        decompose=DecomposeConfig(**stage, max_tokens=1024, max_dimensions=6),
        instantiate=InstantiateConfig(**stage, max_tokens=1024, max_instantiations=10),
        plan=PlanConfig(seed=7),
        generate=GenerateConfig(**stage, max_tokens=300),
        debate=DebateConfig(
            **stage, max_tokens=256, judges=("recall", "strict", "literal"), rounds=1, advocate_max_tokens=128
        ),
        refine=RefineConfig(**stage, max_tokens=300),
        max_refinements=1,
        max_rounds=5,
        max_rows_per_round=128,
        max_calls=5000,
        max_total_tokens=2000000,
        batch_size=16,
        max_failure_rate=0.25,
    )


def _vllm_defaults() -> BarredConfig:
    engine = _engine(engine="vllm", model="m")
    stage = {"engine": engine, "prompt_set": "served", "seed": 0, "max_repairs": 1}
    return BarredConfig(
        decompose=DecomposeConfig(**stage, max_tokens=1024, max_dimensions=6),
        instantiate=InstantiateConfig(**stage, max_tokens=1024, max_instantiations=10),
        plan=PlanConfig(seed=0),
        generate=GenerateConfig(**stage, max_tokens=512),
        debate=DebateConfig(**stage, max_tokens=256, judges=("recall", "strict"), rounds=2, advocate_max_tokens=128),
        refine=RefineConfig(**stage, max_tokens=512),
        max_refinements=2,
        max_rounds=4,
        max_rows_per_round=64,
        max_calls=None,
        max_total_tokens=None,
        batch_size=64,
        max_failure_rate=0.5,
    )


def _parse(argv: list[str]) -> argparse.Namespace:
    """What ``barred generate ARGV`` parses to (the way tests/stages and tests/recipes build it)."""
    parser = argparse.ArgumentParser()
    generate.register(parser.add_subparsers())
    return parser.parse_args(["generate", *argv])


def _snake_case(line: str) -> list[str]:
    return ["--" + word[2:].replace("-", "_") if word.startswith("--") else word for word in line.split()]


@pytest.mark.parametrize(
    "line, expected", [(QUICKSTART, _quickstart), (SERVED, _served), (VLLM_DEFAULTS, _vllm_defaults)]
)
def test_a_command_line_gives_the_config_it_gave_before(line, expected):
    assert generate.build_config(_parse(line.split())).to_dict() == expected().to_dict()
    assert generate.build_config(_parse(line.split())) == expected()


@pytest.mark.parametrize("line", [QUICKSTART, SERVED])
def test_the_snake_case_spelling_gives_the_same_config(line):
    assert "--max_rows_per_round" in _snake_case(line) and "--engine_batch_size" in _snake_case(QUICKSTART)
    assert generate.build_config(_parse(_snake_case(line))) == generate.build_config(_parse(line.split()))


def test_abbreviations_that_named_one_flag_still_do():
    args = _parse(["t.yaml", "--n", "2", "--output", "o", "--sample", "90", "--push", "me/data", "--no-p"])
    assert (args.sample_max_tokens, args.push_to_hub, args.no_progress) == (90, "me/data", True)
    assert _parse(["t.yaml", "--n", "2", "--output", "o", "--sample_max", "90"]).sample_max_tokens == 90


def test_the_flags_and_their_defaults_are_those_of_before():
    args = vars(_parse(["t.yaml", "--n", "2", "--output", "o"]))
    args.pop("run")
    assert args == {
        "task_file": "t.yaml",
        "n": 2,
        "output": "o",
        "overwrite": False,
        "max_seed_chars": None,
        "engine": "local",
        "model": "embedded",
        "base_url": None,
        "servers_file": None,
        "api_key_env": None,
        "max_concurrency": 32,
        "engine_batch_size": 8,
        "threads": None,
        "cache_dir": None,
        # None before, with EngineConfig's default filled in by engine_config(): now that default itself
        "dtype": "auto",
        "timeout": 120.0,
        "max_retries": 6,
        # the provider flags (reasoning models, Azure, batch mode, prices): all off by default
        "provider": None,
        "api_version": None,
        "reasoning_model": None,
        "reasoning_effort": None,
        "reasoning_tokens": None,
        "batch": False,
        "batch_price_factor": 0.5,
        "batch_poll_interval": 10.0,
        "batch_max_retries": 2,
        "price_input": None,
        "price_output": None,
        "prompt_set": None,
        "judges": 2,
        "rounds": 2,
        "max_refinements": 2,
        "seed": 0,
        "sample_max_tokens": None,
        "judge_max_tokens": None,
        "max_repairs": 1,
        "max_calls": None,
        "max_calls_per_sample": 40.0,  # the default request budget (None above: 40 times n, plus 100)
        "max_total_tokens": None,
        "max_rounds": 4,
        "max_rows_per_round": 64,
        "executor": "streaming",
        "ray_address": None,
        "ray_workers": None,
        "ray_gpus_per_worker": 0.0,
        "max_rows_in_flight": None,
        "batch_size": 64,
        "max_failure_rate": 0.5,
        "push_to_hub": None,
        "private": False,
        "no_progress": False,
        "verbose": False,
    }
    groups = {
        group.title: [a.option_strings[0] if a.option_strings else a.dest for a in group._group_actions]
        for group in generate.build_parser()._action_groups
    }
    assert groups == {
        "positional arguments": ["task_file"],
        "options": [
            "-h",
            "--n",
            "--output",
            "--overwrite",
            "--max-seed-chars",
            "--push-to-hub",
            "--private",
            "--no-progress",
            "--verbose",
        ],
        "engine": [
            "--engine",
            "--model",
            "--provider",
            "--base-url",
            "--api-key-env",
            "--api-version",
            "--reasoning-model",
            "--reasoning-effort",
            "--reasoning-tokens",
            "--batch",
            "--batch-price-factor",
            "--batch-poll-interval",
            "--batch-max-retries",
            "--price-input",
            "--price-output",
            "--max-concurrency",
            "--engine-batch-size",
            "--threads",
            "--dtype",
            "--timeout",
            "--max-retries",
            "--cache-dir",
            "--servers-file",
        ],
        "method": [
            "--prompt-set",
            "--judges",
            "--rounds",
            "--max-refinements",
            "--seed",
            "--sample-max-tokens",
            "--judge-max-tokens",
            "--max-repairs",
        ],
        "budget": [
            "--max-calls",
            "--max-calls-per-sample",
            "--max-total-tokens",
            "--max-rounds",
            "--max-rows-per-round",
            "--executor",
            "--ray-address",
            "--ray-workers",
            "--ray-gpus-per-worker",
            "--max-rows-in-flight",
            "--batch-size",
            "--max-failure-rate",
        ],
    }


def test_the_help_shows_the_config_fields_defaults_and_help():
    text = " ".join(generate.build_parser().format_help().split())
    for owner, field, default in (
        (BarredConfig, "max_rounds", 4),
        (BarredConfig, "max_rows_per_round", 64),
        (BarredConfig, "max_failure_rate", 0.5),
        (BarredConfig, "max_refinements", 2),
        (BarredConfig, "max_calls", None),
        (DebateConfig, "rounds", 2),
        (EngineConfig, "max_retries", 6),
        (EngineConfig, "base_url", None),
    ):
        assert flag_help(config_help(owner, field), default) % {"default": default} in text, field
    assert "Every flag also accepts its snake_case spelling" in text


def test_a_flag_may_set_several_fields_only_when_their_defaults_agree():
    with pytest.raises(ValueError, match="are set by one flag: give it its own default"):
        from_config(GenerateConfig, "max_tokens", (DebateConfig, "max_tokens"))


@pytest.mark.parametrize(
    "build, imported",
    [
        ("from hf_barred.cli.main import build_parser; build_parser().format_help()", "[]"),
        (
            "from hf_barred.cli.generate import build_parser; build_parser().format_help()",
            "['datasets', 'transformers']",
        ),
    ],
)
def test_what_building_a_parser_imports(build, imported):
    """`barred --help` imports neither transformers nor datasets; `barred generate`'s parser, no torch."""
    code = (
        f"import sys; {build}; "
        "print(sorted(m for m in ('datasets', 'torch', 'transformers', 'trl') if m in sys.modules))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert found.stdout.strip() == imported
