"""How far the local engine's bfloat16 answers are from its float32 ones, on the quickstart's prompts.

Both precisions of the embedded SmolLM2-135M-Instruct read the same conversations (every
``--every``-th of ``benchmarks/data/quickstart_calls.jsonl``, the calls ``bash scripts/quickstart.sh``
makes) in one forward pass each, teacher-forced: at every position, does bfloat16 (packed weights,
what ``dtype="auto"`` runs on CPUs with AMX or AVX512-BF16; unpacked where oneDNN has no bfloat16
path) pick the same next token as float32, and how far apart are
the two next-token distributions (KL divergence, nats)? Greedy answers can only differ where the
top-1 choices do.

    python benchmarks/bench_precision.py
    python benchmarks/bench_precision.py --every 2 --max-prompts 80
    python benchmarks/bench_precision.py --max-prompts 1 --max-positions 32     # a smoke run
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORKLOAD = ROOT / "benchmarks" / "data" / "quickstart_calls.jsonl"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--every", type=int, default=4, help="Take every N-th recorded conversation (default 4).")
    parser.add_argument("--max-prompts", type=int, default=40, help="At most this many conversations (default 40).")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: the physical cores).")
    parser.add_argument(
        "--max-positions", type=int, default=0, help="Read only the first N tokens of each conversation (0: all)."
    )
    args = parser.parse_args(argv)

    from hf_barred.llm import EngineConfig
    from hf_barred.llm.engines.local.engine import LocalBackend

    engines = {
        dtype: LocalBackend.from_config(
            EngineConfig(engine="local", device="cpu", dtype=dtype, threads=args.threads), progress=False
        )
        for dtype in ("float32", "bfloat16")
    }
    import torch

    calls = [json.loads(line) for line in WORKLOAD.read_text().splitlines() if line.strip()]
    conversations = [c for call in calls for c in call["conversations"]][:: args.every][: args.max_prompts]
    same = positions = 0
    divergence = 0.0
    seconds = dict.fromkeys(engines, 0.0)
    for conversation in conversations:
        ids = torch.tensor([engines["float32"]._encode(conversation)[: args.max_positions or None]])
        logprobs = {}
        for dtype, engine in engines.items():
            start = time.perf_counter()
            with torch.inference_mode():
                logprobs[dtype] = engine.model(input_ids=ids).logits[0].float().log_softmax(-1)
            seconds[dtype] += time.perf_counter() - start
        full, half = logprobs["float32"], logprobs["bfloat16"]
        same += int((full.argmax(-1) == half.argmax(-1)).sum())
        positions += ids.shape[1]
        divergence += float((full.exp() * (full - half)).sum(-1).sum())
    print(
        f"{len(conversations)} conversations, {positions} positions, bfloat16 "
        f"({'packed' if type(engines['bfloat16'].model.lm_head).__name__ == 'PackedLinear' else 'unpacked'}) "
        f"vs float32:"
    )
    print(f"  same next token: {same / positions:.2%}; mean KL(float32 || bfloat16): {divergence / positions:.4f} nats")
    print(f"  forward time: float32 {seconds['float32']:.1f} s, bfloat16 {seconds['bfloat16']:.1f} s")


if __name__ == "__main__":
    main()
