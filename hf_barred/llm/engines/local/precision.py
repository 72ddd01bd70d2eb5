"""The ``local`` engine's precision on CPU: bfloat16 matrix products where the CPU has AMX.

Answering is a long run of small matrix products, bounded by how fast the weights are read and
multiplied. On x86 CPUs with AMX tiles (Intel Sapphire Rapids and later), oneDNN multiplies
bfloat16 matrices several times faster than float32, and bfloat16 weights are half as many bytes
to read. ``EngineConfig.dtype="auto"`` therefore picks bfloat16 on such CPUs and float32 on the
others (where bfloat16 products are emulated and slower), and the checkpoint's own dtype on GPUs.

bfloat16 changes the numbers, so greedy answers can differ from float32 ones: the engine names
its precision in the response cache's key (:attr:`LocalBackend.cache_name`), and answers of one
precision are never served for the other. ``--dtype float32`` reproduces float32 answers anywhere.

:func:`pack_linear_weights` goes one step further on CPU: it hands each ``nn.Linear``'s bfloat16
weight to oneDNN once, in the blocked layout its AMX kernels read, instead of at every call
(what ``torch.compile``'s CPU backend does with frozen weights). The products are the same
numbers as ``torch.nn.functional.linear`` on the same weights, up to bfloat16 rounding (checked
on a probe when packing); a torch without the oneDNN linear ops keeps plain bfloat16 layers.

Example:
    >>> import torch
    >>> from hf_barred.llm.engines.local.precision import pack_linear_weights, resolve_dtype
    >>> resolve_dtype("float32", "cpu")
    torch.float32
    >>> model = torch.nn.Sequential(torch.nn.Linear(64, 32)).to(torch.bfloat16)
    >>> x = torch.randn(3, 64, dtype=torch.bfloat16)
    >>> expected = model(x)
    >>> packed = pack_linear_weights(model)  # 1 on a CPU with oneDNN, else 0
    >>> torch.allclose(model(x), expected, rtol=1e-2, atol=1e-2)
    True
"""

from __future__ import annotations

import logging
from typing import Union

import torch

logger = logging.getLogger(__name__)


def cpu_has_amx_bf16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices on AMX tiles (and torch can use them)."""
    try:
        from torch.cpu import _is_amx_tile_supported  # private, but what torch itself checks

        return bool(_is_amx_tile_supported()) and torch.backends.mkldnn.is_available()
    except (ImportError, AttributeError, RuntimeError):
        return False


def resolve_dtype(dtype: str, device: str) -> Union[torch.dtype, str]:
    """The torch dtype to load the model in: ``"auto"`` is bfloat16 on CPUs with AMX, float32 on
    other CPUs and ``"auto"`` (the checkpoint's dtype) on other devices (``dtype`` is one of
    :data:`~hf_barred.llm.config.DTYPES`, which ``EngineConfig`` checks)."""
    if dtype != "auto":
        return getattr(torch, dtype)
    if device != "cpu":
        return "auto"
    return torch.bfloat16 if cpu_has_amx_bf16() else torch.float32


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

    Nothing is replaced (0) when the model holds no such layer, or when this torch build lacks the
    oneDNN linear ops or they disagree with ``nn.Linear`` on a probe.
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
