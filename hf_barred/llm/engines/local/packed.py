"""bfloat16 ``nn.Linear`` layers with their weights packed once for oneDNN, on CPU.

A plain bfloat16 ``nn.Linear`` on CPU hands its weight to oneDNN at every call, which re-lays it
out in the blocked layout its kernels read (a floor of about 100 µs a layer). :func:`pack_linear_weights`
does that once per layer instead (what ``torch.compile``'s CPU backend does with frozen weights,
through the same ops, ``torch.ops.mkldnn._reorder_linear_weight`` and ``_linear_pointwise``). The
products are the same numbers as ``torch.nn.functional.linear`` on the same weights, up to bfloat16
rounding (checked on a probe when packing); a torch without these ops, or a CPU whose oneDNN has no
bfloat16 path (:func:`onednn_packs_bfloat16`: AVX512-BW/VL/DQ or AVX-NE-CONVERT on x86), keeps plain
bfloat16 layers.

:func:`time_linear_products` times packed bfloat16 products against float32 ones: what
``dtype="auto"`` measures before it picks bfloat16 (:mod:`hf_barred.llm.engines.local.precision`).

Example:
    >>> import torch
    >>> from hf_barred.llm.engines.local.packed import pack_linear_weights
    >>> model = torch.nn.Sequential(torch.nn.Linear(64, 32)).to(torch.bfloat16)
    >>> x = torch.randn(3, 64, dtype=torch.bfloat16)
    >>> expected = model(x)
    >>> packed = pack_linear_weights(model)  # 1 where oneDNN packs bfloat16, else 0
    >>> torch.allclose(model(x), expected, rtol=1e-2, atol=1e-2)
    True
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Optional

import torch

logger = logging.getLogger(__name__)


def onednn_packs_bfloat16() -> bool:
    """Whether this torch's oneDNN has a bfloat16 path on this CPU (x86: AVX512-BW, VL and DQ, or
    AVX-NE-CONVERT), the condition of ``_reorder_linear_weight`` on bfloat16 weights (and of inductor's
    bfloat16 oneDNN fusions, which ask the same op)."""
    try:
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # an older torch, or one built without oneDNN
        return False


class PackedLinear(torch.nn.Module):
    """A bfloat16 ``nn.Linear`` whose weight oneDNN holds in its own blocked layout (inference only)."""

    def __init__(self, linear: torch.nn.Linear):
        super().__init__()
        weight = linear.weight.detach()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # The batch-size hint only tunes the layout; any number of rows works with it.
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight, 16)
        self.bias = None if linear.bias is None else linear.bias.detach()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, self.in_features)
        out = torch.ops.mkldnn._linear_pointwise(rows, self.packed, self.bias, "none", [], "")
        return out.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


def _packed_agrees(linear: torch.nn.Linear) -> bool:
    """Whether a packed copy of ``linear`` computes what ``linear`` computes (within bfloat16 rounding) on
    random rows."""
    probe = torch.randn(3, linear.in_features, dtype=linear.weight.dtype, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        return torch.allclose(PackedLinear(linear)(probe).float(), linear(probe).float(), rtol=1e-2, atol=1e-2)


def pack_linear_weights(model: torch.nn.Module) -> int:
    """Replace every bfloat16 CPU ``nn.Linear`` of ``model`` by a :class:`PackedLinear`; the count.

    Nothing is replaced (0) when the model holds no such layer, when oneDNN has no bfloat16 path on
    this CPU, or when this torch build lacks the oneDNN linear ops or they disagree with ``nn.Linear``
    on a probe.
    """
    layers = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if isinstance(child, torch.nn.Linear)
        and child.weight.dtype == torch.bfloat16
        and child.weight.device.type == "cpu"
    ]
    if not layers:
        return 0
    if not onednn_packs_bfloat16():
        logger.info("bfloat16 weights left unpacked: oneDNN has no bfloat16 path on this CPU.")
        return 0
    try:
        if not _packed_agrees(layers[0][2]):
            logger.warning("oneDNN's packed bfloat16 linear disagrees with nn.Linear here; weights left unpacked.")
            return 0
        packed = [PackedLinear(child) for _, _, child in layers]
    except (RuntimeError, AttributeError) as err:  # a torch without oneDNN's linear ops
        logger.info("bfloat16 weights left unpacked (%s).", err)
        return 0
    for (parent, name, _), layer in zip(layers, packed):
        setattr(parent, name, layer)
    return len(packed)


def time_linear_products(products: Sequence[tuple[int, int, int]], rounds: int = 5) -> Optional[dict[str, float]]:
    """Seconds that ``products`` take in float32 and in packed bfloat16 (``{"float32": s, "bfloat16": s}``),
    or None when a packed layer disagrees with its bfloat16 ``nn.Linear`` (the probe of :func:`pack_linear_weights`).

    Each product ``(rows, in_features, out_features)`` multiplies ``rows`` random rows by a random
    weight, as ``torch.nn.functional.linear`` in float32 (what a float32 layer runs) and as a
    :class:`PackedLinear` on bfloat16 rows (what a packed bfloat16 layer runs). The calls alternate
    between the two precisions, one warm-up round (oneDNN builds its kernels on a first call) and then
    ``rounds`` rounds; a product's time is its fastest round (other processes on the cores only ever
    add time), and a precision's time is the sum over ``products``. They run on one thread (torch's
    setting is restored after): on cores shared with other processes a multi-threaded product waits
    for its slowest thread, and that wait, not the product, is what would be measured. Raises
    RuntimeError (or AttributeError) where oneDNN cannot pack bfloat16 weights. Torch's global random
    generator is left alone.
    """
    generator = torch.Generator().manual_seed(0)
    calls: dict[str, list[Callable[[], torch.Tensor]]] = {"float32": [], "bfloat16": []}
    for rows, n_in, n_out in products:
        weight = torch.randn(n_out, n_in, generator=generator) / math.sqrt(n_in)  # outputs of order 1
        x = torch.randn(rows, n_in, generator=generator)
        linear = torch.nn.utils.skip_init(torch.nn.Linear, n_in, n_out, bias=False, dtype=torch.bfloat16)
        with torch.no_grad():
            linear.weight.copy_(weight)
        if not _packed_agrees(linear):
            return None
        calls["float32"].append(partial(torch.nn.functional.linear, x, weight))
        calls["bfloat16"].append(partial(PackedLinear(linear), x.to(torch.bfloat16)))
    best = {name: [math.inf] * len(products) for name in calls}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            for round_ in range(1 + rounds):
                for i in range(len(products)):
                    for name, of_precision in calls.items():
                        start = time.perf_counter()
                        of_precision[i]()
                        seconds = time.perf_counter() - start
                        if round_:  # the first round warms up
                            best[name][i] = min(best[name][i], seconds)
    finally:
        torch.set_num_threads(threads)
    return {name: sum(times) for name, times in best.items()}
