"""The embedded default model: a tiny Qwen2-architecture LM with a BPE tokenizer trained on BFCL's text.

Built deterministically from the pinned benchmark (questions, function docs, gold calls, BFCL's
system prompt), saved with ``save_pretrained`` and cached under ``<cache>/toy-<key>``, where the
key hashes the builder config and the corpus. It then loads through ``AutoModelForCausalLM`` /
``AutoTokenizer`` like any hub model, and uses TRL's Qwen2.5 training chat template (with
``{% generation %}`` markers), so the toy and Qwen2.5 share one prompt and tool-call format.

Example:
    >>> from parl_mt_lib.toy_model import build_toy_model
    >>> path = build_toy_model()               # ~10 s the first time, then cached
    >>> from transformers import AutoTokenizer
    >>> tok = AutoTokenizer.from_pretrained(path)
    >>> tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    '<|im_start|>system\\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\n<|im_start|>user\\nhi<|im_end|>\\n'
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from .runtime import atomic_dir, build_lock, cache_dir

BUILDER_VERSION = 1
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
ADDED = ["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>",
         "<summary>", "</summary>", "<plan>", "</plan>"]


@dataclass(frozen=True)
class ToyConfig:
    vocab_size: int = 4096
    hidden_size: int = 64
    intermediate_size: int = 256
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    num_key_value_heads: int = 2
    max_position_embeddings: int = 16384  # BFCL prompts are ~7k tokens; long_context more
    seed: int = 0


def chat_template() -> str:
    """TRL's Qwen2.5 training template (the Qwen2.5 template plus generation markers)."""
    import trl

    return (Path(trl.__file__).parent / "chat_templates" / "qwen2_5_training.jinja").read_text()


def corpus(extra_texts=()) -> list[str]:
    """The benchmark's own text: user turns, function docs, gold calls, system prompts; plus ``extra_texts``."""
    from .bfcl import CATEGORIES, load_entries
    from .context import COT_INSTRUCTION, system_prompt

    texts, seen_docs = [], set()
    for e in load_entries(CATEGORIES):
        texts.extend(m["content"] for turn in e.turns for m in turn)
        texts.append("[" + ", ".join(c.render() for turn in e.gold_calls for c in turn) + "]")
        key = tuple(e.involved_classes)
        if key not in seen_docs:
            seen_docs.add(key)
            texts.append(system_prompt(e.functions))
    texts.append(system_prompt(None, style="json") + "\n" + COT_INSTRUCTION)
    texts.extend(extra_texts)
    return texts


def _train_tokenizer(texts: list[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, special_tokens=SPECIAL,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   model_max_length=ToyConfig.max_position_embeddings)
    fast.add_tokens(ADDED)
    fast.chat_template = chat_template()
    return fast


def _key(cfg: ToyConfig, texts: list[str]) -> str:
    h = hashlib.sha256(json.dumps({"v": BUILDER_VERSION, "cfg": asdict(cfg)}).encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:12]


def build_toy_model(cfg: ToyConfig = ToyConfig(), extra_texts=(), out_dir=None, force: bool = False) -> Path:
    """Build (or reuse from cache) the toy model; return its directory, loadable with ``from_pretrained``."""
    texts = corpus(extra_texts)
    path = Path(out_dir) if out_dir else cache_dir() / f"toy-{_key(cfg, texts)}"
    if (path / "config.json").exists() and not force:
        return path
    with build_lock(path):  # a concurrent builder (another xdist worker) may have finished meanwhile
        if (path / "config.json").exists() and not force:
            return path
        return _build(cfg, texts, path)


def _build(cfg: ToyConfig, texts, path: Path) -> Path:
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    tok = _train_tokenizer(texts, cfg.vocab_size)
    torch.manual_seed(cfg.seed)
    config = Qwen2Config(vocab_size=len(tok), hidden_size=cfg.hidden_size, intermediate_size=cfg.intermediate_size,
                         num_hidden_layers=cfg.num_hidden_layers, num_attention_heads=cfg.num_attention_heads,
                         num_key_value_heads=cfg.num_key_value_heads,
                         max_position_embeddings=cfg.max_position_embeddings, tie_word_embeddings=True,
                         bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"),
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    model = Qwen2ForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                                               do_sample=False)
    with atomic_dir(path) as tmp:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "toy_config.json").write_text(json.dumps({"builder_version": BUILDER_VERSION, **asdict(cfg),
                                                         "n_texts": len(texts)}, indent=2))
    return path
