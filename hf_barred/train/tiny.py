"""Tiny, randomly initialised models with in-memory tokenizers, for tests and runnable examples.

Nothing is downloaded: a 2-layer, 32-hidden BERT classifier (word-level tokenizer) and a 2-layer
Llama with a byte-level BPE tokenizer and a ChatML chat template, both saved into a folder that
``GuardrailConfig(base_model=folder)`` can train on in seconds on a CPU.

Example:
    >>> import tempfile
    >>> from hf_barred.train.tiny import make_tiny_causal_lm
    >>> folder = make_tiny_causal_lm(tempfile.mkdtemp(), corpus=["How do I kill a process?"])
    >>> from transformers import AutoTokenizer
    >>> tok = AutoTokenizer.from_pretrained(folder)
    >>> tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    '<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n'
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Optional

from ..guardrails.formats import binary_prompt, policy_answer, policy_prompt

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _prompt_corpus(corpus: Iterable[str]) -> list[str]:
    """The texts plus the fixed prompt wording, so the tokenizer knows the prompt's words."""
    texts = list(corpus)
    return texts + [
        binary_prompt("rule", "text"),
        policy_prompt("S1: x", "text"),
        policy_answer(True, ["S1", "S2"]),
        policy_answer(False, []),
        "0 1",
    ]


def make_tiny_classifier(folder: str | Path, corpus: Iterable[str] = (), seed: int = 0, dropout: float = 0.1) -> str:
    """A 2-layer BERT (hidden 32) for sequence classification and a word-level tokenizer
    (``dropout=0``: runs that see the same batches give the same weights)."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    words = sorted(
        {
            w
            for text in _prompt_corpus(corpus)
            for w, _ in pre_tokenizers.BertPreTokenizer().pre_tokenize_str(text.lower())
        }
    )
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    vocab = {tok: i for i, tok in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.normalizer = __import__("tokenizers").normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="[PAD]",
        unk_token="[UNK]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=512,
    )
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=512,
        pad_token_id=0,
        # transformers configs take num_labels through **kwargs, which their dataclass_transform __init__ omits
        num_labels=2,  # type: ignore[call-arg]
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def make_tiny_causal_lm(
    folder: str | Path, corpus: Iterable[str] = (), seed: int = 0, chat_template: bool = True
) -> str:
    """A 2-layer Llama (hidden 32) and a byte-level BPE tokenizer trained on ``corpus`` + the prompts."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_prompt_corpus(corpus), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>" if chat_template else "<|endoftext|>",
        pad_token="<|endoftext|>",
        model_max_length=2048,
        chat_template=CHATML_TEMPLATE if chat_template else None,
    )
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=tok.get_vocab_size(),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def make_tiny_lora_classifier(
    base_model: str,
    output_dir: str | Path,
    texts: Sequence[str],
    labels: Sequence[int],
    *,
    rule: Optional[str] = None,
    steps: int = 5,
    learning_rate: float = 5e-3,
    lora_r: int = 8,
    seed: int = 0,
    label_names: Sequence[str] = ("safe", "unsafe"),
) -> str:
    """A LoRA classifier guardrail that keeps its adapter (``keep_adapter=True``: the folders that
    ``barred serve`` runs on one shared base), trained by :func:`hf_barred.train.train_guardrail` for
    ``steps`` full-batch steps; returns its folder.

    >>> import tempfile
    >>> from hf_barred.guardrails.guardrail import Guardrail
    >>> root = tempfile.mkdtemp()
    >>> base = make_tiny_classifier(root + "/base", corpus=["kill a process", "kill my neighbour"])
    >>> folder = make_tiny_lora_classifier(base, root + "/guard", ["kill a process", "kill my neighbour"], [0, 1])
    >>> guard = Guardrail.from_pretrained(folder)
    >>> guard.spec.adapter, 0.0 <= guard(["kill a process"])[0].score <= 1.0
    (True, True)
    """
    from datasets import Dataset

    from .args import GuardrailTrainingArguments
    from .trainer import train_guardrail

    args = GuardrailTrainingArguments(
        model_kind="classifier",
        base_model=base_model,
        rule=rule or "The input is unsafe.",
        output_dir=str(output_dir),
        lora_r=lora_r,
        lora_alpha=2 * lora_r,
        class_names=list(label_names),
        validation_size=0.0,
        max_steps=steps,
        learning_rate=learning_rate,
        per_device_train_batch_size=len(texts),
        seed=seed,
        keep_adapter=True,
        threshold_for="fixed",
        logging_steps=steps,
        disable_tqdm=True,
    )
    with contextlib.redirect_stdout(io.StringIO()):  # the trainer prints its log lines: a helper stays quiet
        train_guardrail(args, Dataset.from_dict({"text": list(texts), "label": list(labels)}))
    return str(output_dir)
