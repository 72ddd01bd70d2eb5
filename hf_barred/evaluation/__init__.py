"""Scoring guardrails and LLM judges on labelled data, and reporting it.

- :mod:`.evaluate`: a trained guardrail or an LLM-as-judge on a dataset, with the same prompt;
- :mod:`.judges`: the paper's logprob judge baseline, ``P("1") / (P("1") + P("0"))``;
- :mod:`.apt`: evaluation policies for policy-conditioned guardrails;
- :mod:`.coverage`: ``barred coverage``'s inputs and report;
- :mod:`.report`, :mod:`.plots`: ``report.json``, ``report.md`` and the figures;
- :mod:`.metrics`: the guardrail metrics as an ``evaluate`` module, and calibration.
"""
