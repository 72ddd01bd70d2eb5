"""Kept for old imports: the spec moved to :mod:`hf_barred.spec` (inference reads it, training writes it)."""

from ..spec import SPEC_FILE, GuardrailSpec

__all__ = ["SPEC_FILE", "GuardrailSpec"]
