"""Publish a trained guardrail folder to the Hub with the real ``huggingface_hub`` client.

The folder already holds everything a user needs: the weights (or the LoRA adapter), the tokenizer,
``guardrail_config.json`` and the model card ``README.md``. Checkpoints and evaluation predictions
stay local.

Example:
    >>> from hf_barred.train.publish import push_guardrail
    >>> push_guardrail("outputs/xstest-guard", "me/xstest-guard")  # doctest: +SKIP
    'https://huggingface.co/me/xstest-guard/commit/...'
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..guardrails.spec import SPEC_FILE

IGNORE_PATTERNS = ["checkpoint-*", "checkpoint-*/**", "*.tmp/**", "**/predictions.jsonl", "trainer_state.json"]


def push_guardrail(folder: str | Path, repo_id: str, *, private: bool = False, token: Optional[str] = None,
                   revision: Optional[str] = None, commit_message: Optional[str] = None) -> str:
    """Create (if needed) the model repo ``repo_id`` and upload the guardrail folder; returns the commit URL."""
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / SPEC_FILE).is_file():
        raise FileNotFoundError(f"Expected a guardrail folder with {SPEC_FILE} (made by `barred train`), found "
                                f"{folder}. Fix: train first, or pass the --output folder of `barred train`.")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
    info = api.upload_folder(
        folder_path=str(folder), repo_id=repo_id, repo_type="model", revision=revision,
        commit_message=commit_message or "Upload guardrail trained with hf_barred",
        ignore_patterns=IGNORE_PATTERNS,
    )
    return str(getattr(info, "commit_url", info))
