"""The Gradio app of a hf_barred Space, and ``export_space`` to write a ready Space repo."""

from .export import export_space

__all__ = ["export_space"]
