"""An attention function for the ``local`` engine on CPU: SDPA with shared key/value heads.

Models with grouped-query attention (SmolLM2: 9 query heads, 3 key/value heads) keep fewer
key/value heads than query heads. With a padding mask, transformers' ``sdpa`` attention copies
each key/value head once per query head (``repeat_kv``) at every layer of every decoding step,
which on CPU costs more than the attention itself. PyTorch's SDPA shares them without copying
(``enable_gqa=True``) and computes the same numbers. :func:`use_shared_kv_attention` switches a
loaded CPU model to it; GPUs keep ``sdpa`` (their fast kernels take no mask with ``enable_gqa``).

Example:
    >>> import torch
    >>> from hf_barred.llm.engines.local.attention import shared_kv_sdpa
    >>> q, k = torch.randn(1, 4, 3, 8), torch.randn(1, 2, 3, 8)
    >>> out, _ = shared_kv_sdpa(torch.nn.Module(), q, k, k, attention_mask=None)
    >>> tuple(out.shape)  # (batch, positions, heads, head size), as transformers expects
    (1, 3, 4, 8)
"""

from __future__ import annotations

from typing import Any, Optional

import torch

NAME = "hf_barred_sdpa"


def shared_kv_sdpa(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Optional[torch.Tensor],
    dropout: float = 0.0,
    scaling: Optional[float] = None,
    is_causal: Optional[bool] = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature; causal without a mask, as its ``sdpa``."""
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    causal = query.shape[2] > 1 and attention_mask is None and causal
    out = torch.nn.functional.scaled_dot_product_attention(
        query,
        key,
        value,
        attn_mask=attention_mask,
        dropout_p=dropout,
        scale=scaling,
        is_causal=causal,
        enable_gqa=key.shape[1] != query.shape[1],
    )
    return out.transpose(1, 2).contiguous(), None


def use_shared_kv_attention(model: Any) -> bool:
    """Switch ``model`` (on CPU, now using ``sdpa``) to :func:`shared_kv_sdpa`; True when switched."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    if model.device.type != "cpu" or getattr(model.config, "_attn_implementation", None) != "sdpa":
        return False
    AttentionInterface.register(NAME, shared_kv_sdpa)
    AttentionMaskInterface.register(NAME, sdpa_mask)
    model.set_attn_implementation(NAME)
    return True
