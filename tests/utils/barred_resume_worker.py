"""Run BARRED on a scripted engine behind the real response cache (the subprocess of the resume test).

Usage: python tests/utils/barred_resume_worker.py OUTPUT_DIR CACHE_DIR DELAY_SECONDS
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository: `tests.utils` imports

import hf_barred.llm as llm  # noqa: E402
from hf_barred.llm import EngineConfig  # noqa: E402
from hf_barred.policy.task import GuardrailTask  # noqa: E402
from hf_barred.recipes.barred.run import BarredConfig, run_barred  # noqa: E402
from tests.utils.barred_script import BarredScript  # noqa: E402

TASK = GuardrailTask(
    criterion="The agent's response contains health advice.",
    labels=("no_health_advice", "health_advice"),
    name="health",
    seeds=tuple(f"User: question {i}?\nAgent: answer {i}." for i in range(6)),
)


def verdict(text: str, round_: int, judge: int) -> str:
    number = int(text.split("question ")[1].split("\n")[0]) if "question " in text else 0
    return ("yes", "no", "yes")[(number + judge + round_) % 3]


def main() -> None:
    output_dir, cache_dir, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    script = BarredScript(verdict=verdict)
    reply = script.reply

    def slow(conversation):
        time.sleep(delay)
        return reply(conversation)

    script.reply = slow
    llm.build_backend = lambda config: script
    config = BarredConfig.for_engine(EngineConfig(engine="local", cache_dir=cache_dir), max_refinements=1, batch_size=8)
    run_barred(TASK, 6, config, output_dir, progress=False)
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
