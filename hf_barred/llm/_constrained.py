"""JSON-schema constrained decoding for the ``local`` engine, with xgrammar's matchers.

:class:`JsonSchemaLogitsProcessor` masks each row's next-token logits to what its compiled grammar
allows. Unlike a plain mask it never breaks a generation: a row whose grammar allows no token of
this vocabulary (a tokenizer without a space token, say), or that is fed a token the grammar
rejects (a stop string), goes on unconstrained, and its answer is validated like any other.

Example:
    >>> import torch, xgrammar
    >>> from transformers import AutoTokenizer
    >>> from hf_barred.embedding import embedder_path
    >>> tokenizer = AutoTokenizer.from_pretrained(embedder_path("embedded"))
    >>> info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, stop_token_ids=[tokenizer.sep_token_id])
    >>> grammar = xgrammar.GrammarCompiler(info).compile_json_schema('{"type": "boolean"}')
    >>> processor = JsonSchemaLogitsProcessor(grammar, batch_size=1)
    >>> scores = processor(torch.zeros(1, 1, dtype=torch.long), torch.zeros(1, info.vocab_size))
    >>> sorted(tokenizer.convert_ids_to_tokens(torch.isfinite(scores[0]).nonzero().flatten().tolist()))
    ['f', 'fa', 'false', 't', 'tr', 'true']
"""

from __future__ import annotations

import torch
import transformers
import xgrammar


class JsonSchemaLogitsProcessor(transformers.LogitsProcessor):
    """One ``generate`` call's worth of grammar matchers (make a new processor per call)."""

    def __init__(self, grammar: xgrammar.CompiledGrammar, batch_size: int):
        self.matchers = [xgrammar.GrammarMatcher(grammar) for _ in range(batch_size)]
        self.active = [True] * batch_size
        self.bitmask = xgrammar.allocate_token_bitmask(batch_size, grammar.tokenizer_info.vocab_size)
        self.vocab_size = grammar.tokenizer_info.vocab_size
        self.started = False

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.started:  # the token sampled last step (one device-to-host copy for the batch)
            for i, token in enumerate(input_ids[:, -1].tolist()):
                matcher = self.matchers[i]
                if self.active[i] and not matcher.is_terminated() and not matcher.accept_token(token):
                    self.active[i] = False
        self.started = True
        rows = [i for i, matcher in enumerate(self.matchers) if self.active[i] and not matcher.is_terminated()]
        if not rows:
            return scores
        for i in rows:
            self.matchers[i].fill_next_token_bitmask(self.bitmask, i)
        # Masked on the CPU in float32, where the bitmask lives (xgrammar's GPU kernels need triton).
        masked = scores[rows].float().cpu()
        xgrammar.apply_token_bitmask_inplace(masked, self.bitmask[rows], vocab_size=self.vocab_size)
        satisfiable = torch.isfinite(masked).any(dim=-1).tolist()
        for i, ok in zip(rows, satisfiable):
            self.active[i] = self.active[i] and ok
        keep = [k for k, ok in enumerate(satisfiable) if ok]
        scores = scores.clone()
        scores[[rows[k] for k in keep]] = masked[keep].to(device=scores.device, dtype=scores.dtype)
        return scores
