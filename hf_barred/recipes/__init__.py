"""Recipes: plain, resumable sequences of stage calls, and their statistics.

- :mod:`hf_barred.recipes.barred.run`: BARRED (decompose, plan, generate, debate, refine) until N samples.
- :mod:`hf_barred.recipes.apt`: APT augmentation (category deletion, guideline editing).

Stages never import recipes; recipes import stages.
"""
