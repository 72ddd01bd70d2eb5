"""JSON-schema constrained decoding for the ``local`` engine, with xgrammar's matchers.

:class:`GrammarRows` holds one matcher per row of a decoding loop: :meth:`~GrammarRows.mask`
sets the logits of the tokens a row's grammar forbids to ``-inf`` (all rows' bitmasks filled in
one batched, multi-threaded xgrammar call), :meth:`~GrammarRows.accept` advances a row by the
token it got. Unlike a plain mask it never breaks a generation: a row whose grammar allows no
token of this vocabulary (a tokenizer without a space token, say), or that is fed a token the
grammar rejects (a stop string), goes on unconstrained, and its answer is validated like any other.

Example:
    >>> import torch, xgrammar
    >>> from transformers import AutoTokenizer
    >>> from hf_barred.stages.embedding import embedder_path
    >>> tokenizer = AutoTokenizer.from_pretrained(embedder_path("embedded"))
    >>> info = xgrammar.TokenizerInfo.from_huggingface(tokenizer, stop_token_ids=[tokenizer.sep_token_id])
    >>> grammar = xgrammar.GrammarCompiler(info).compile_json_schema('{"type": "boolean"}')
    >>> rows = GrammarRows(grammar, batch_size=1)
    >>> logits = torch.zeros(1, info.vocab_size)
    >>> rows.mask(logits, [0])
    >>> sorted(tokenizer.convert_ids_to_tokens(torch.isfinite(logits[0]).nonzero().flatten().tolist()))
    ['f', 'fa', 'false', 't', 'tr', 'true']
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import xgrammar


class GrammarRows:
    """One decoding call's worth of grammar matchers, indexed by row (make one per call)."""

    def __init__(self, grammar: xgrammar.CompiledGrammar, batch_size: int, threads: int = 1):
        self.matchers = [xgrammar.GrammarMatcher(grammar) for _ in range(batch_size)]
        self.active = [True] * batch_size  # False: this row goes on unconstrained
        self.bitmask = xgrammar.allocate_token_bitmask(batch_size, grammar.tokenizer_info.vocab_size)
        self.vocab_size = grammar.tokenizer_info.vocab_size
        self._batch = xgrammar.BatchGrammarMatcher(max_threads=threads)

    def _live(self, row: int) -> bool:
        return self.active[row] and not self.matchers[row].is_terminated()

    def mask(self, logits: torch.Tensor, rows: Sequence[int]) -> None:
        """Mask ``logits`` in place: its line ``k`` belongs to row ``rows[k]``."""
        lines = [k for k, row in enumerate(rows) if self._live(row)]
        if not lines:
            return
        self._batch.batch_fill_next_token_bitmask([self.matchers[rows[k]] for k in lines], self.bitmask, indices=lines)
        target = logits if logits.device.type == "cpu" else logits.cpu()  # xgrammar's GPU kernels need triton
        before = target[lines].clone()
        xgrammar.apply_token_bitmask_inplace(target, self.bitmask, vocab_size=self.vocab_size, indices=lines)
        satisfiable = torch.isfinite(target[lines]).any(dim=-1).tolist()
        for k, line, ok in zip(range(len(lines)), lines, satisfiable):
            if not ok:  # nothing in this vocabulary fits: unconstrained from here on
                self.active[rows[line]] = False
                target[line] = before[k]
        if target is not logits:
            logits.copy_(target.to(logits.device))

    def release(self, row: int) -> None:
        """``row`` is finished: mask nothing more for it."""
        self.active[row] = False

    def accept(self, row: int, token: int) -> None:
        """Advance ``row``'s matcher by ``token`` (a rejected token ends its constraint)."""
        if self._live(row) and not self.matchers[row].accept_token(token):
            self.active[row] = False
