"""Policies: anything with ``generate(list[StepRequest]) -> list[Generation]``.

* :class:`OraclePolicy` replays the gold calls (one call per step by default, then an empty message);
* :class:`ScriptedPolicy` answers from a function of the request, a ``MockModel`` for engine tests;
* :class:`HFPolicy` runs any transformers causal LM with one batched ``generate`` across episodes;
* :class:`OpenAIPolicy` talks to any OpenAI-compatible ``/chat/completions`` endpoint (e.g.
  ``vllm serve``) with bounded concurrency and retries.

Prompting (plain vs CoT) and call style live in the context builder, not here.

Example:
    >>> p = make_policy("oracle")
    >>> p.name
    'oracle'
    >>> make_policy("openai:qwen", base_url="http://127.0.0.1:9/v1").model
    'qwen'
"""
from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

from .calls import render_calls
from .context import render_prompt
from .rollout import MAX_STEPS, Generation, StepRequest


class PolicyError(RuntimeError):
    """The policy could not produce an answer at all (endpoint down after retries, ...)."""


def gold_step(ep, calls_per_step: int = 1):
    """(calls for the episode's next step, the turn's calls not yet made): gold calls of the current turn,
    ``calls_per_step`` at a time, packed tighter when the turn has more calls than BFCL's step limit."""
    gold = ep.entry.gold_calls[ep.turn] if ep.turn < len(ep.entry.gold_calls) else []
    per = max(calls_per_step, -(-len(gold) // MAX_STEPS))
    k = len(ep.steps_of(ep.turn)) * per
    return gold[k:k + per], gold[k:]


class OraclePolicy:
    """Gold calls of the current turn, ``calls_per_step`` at a time; an empty message ends the turn.

    A turn with more gold calls than BFCL's step limit allows (two long_context turns have 34) is
    packed into more calls per step, so the oracle never hits the limit.

    With a ``tokenizer`` it also counts prompt tokens, so oracle runs can measure context growth.
    """

    name = "oracle"

    def __init__(self, calls_per_step: int = 1, style: str = "python", tokenizer=None):
        self.calls_per_step, self.style, self.tokenizer = calls_per_step, style, tokenizer

    def generate(self, requests: list[StepRequest]) -> list[Generation]:
        out = []
        for req in requests:
            chunk, _ = gold_step(req.episode, self.calls_per_step)
            text = render_calls(chunk, self.style) if chunk else ""
            n = None
            if self.tokenizer is not None:
                n = len(self.tokenizer(render_prompt(self.tokenizer, req.messages, req.tools),
                                       add_special_tokens=False).input_ids)
            out.append(Generation(text, prompt_tokens=n))
        return out

    def reseed(self, seed: int) -> None:
        pass

    def load_weights(self, model=None, adapter_dir=None) -> None:
        pass  # no weights


class ScriptedPolicy:
    """Answers ``fn(request) -> str`` for every request: a weight-free stand-in for a model (``MockModel``).

    With a ``tokenizer`` and ``keep_tokens=True`` it also returns the prompt ids (the request rendered by the
    tokenizer's chat template) and the completion ids (the text + end-of-turn token), without sampler log-probs:
    enough for the RL loop to train a model on scripted rollouts (the trainer's log-probs then stand in for them).
    """

    def __init__(self, fn, name: str = "scripted", style: str = "python", tokenizer=None, keep_tokens: bool = False):
        self.fn, self.name, self.style, self.tok, self.keep_tokens = fn, name, style, tokenizer, keep_tokens

    def generate(self, requests):
        out = []
        for r in requests:
            gen = Generation(self.fn(r))
            if self.tok is not None:
                ids = self.tok(render_prompt(self.tok, r.messages, r.tools), add_special_tokens=False).input_ids
                comp = self.tok(gen.text, add_special_tokens=False).input_ids + [self.tok.eos_token_id]
                gen.prompt_tokens, gen.completion_tokens = len(ids), len(comp)
                if self.keep_tokens:
                    gen.prompt_ids, gen.completion_ids = list(ids), comp
            out.append(gen)
        return out

    def reseed(self, seed: int) -> None:
        pass

    def load_weights(self, model=None, adapter_dir=None) -> None:
        pass  # no weights


@contextmanager
def checkpoint_generation_defaults_off(model):
    """Generate without the checkpoint's ``generation_config`` defaults (Qwen2.5-Instruct ships
    ``repetition_penalty: 1.05, top_k: 20, top_p: 0.8``): transformers fills every knob a call leaves unset from
    the checkpoint's config, so the sampler would not draw from the distribution the trainer scores. Inside this
    block the model's config holds only its special-token ids; unset knobs then take transformers' neutral global
    defaults (``top_k`` 50 is not neutral: callers pass ``top_k=0``)."""
    from transformers import GenerationConfig

    target = model.get_base_model() if hasattr(model, "get_base_model") else model
    saved = target.generation_config
    target.generation_config = GenerationConfig(bos_token_id=saved.bos_token_id, eos_token_id=saved.eos_token_id,
                                                pad_token_id=saved.pad_token_id)
    try:
        yield
    finally:
        target.generation_config = saved


class HFPolicy:
    """A transformers causal LM; left-padded batched ``generate`` across the driver's episodes.

    ``micro_batch_size`` caps one ``generate`` call. On CPU it defaults to 1: a padded batch sends
    SDPA down its masked path, which materialises batch x heads x L^2 scores; measured on 2 cores with
    the toy at ~9.5k-token BFCL prompts, a padded batch of 8 took ~19 s per step against ~0.6 s per
    unpadded prompt. On GPU the whole batch goes at once.

    ``max_batch_tokens`` caps the padded prompt tokens of one call (rows x longest prompt; a longer prompt goes
    alone): at BFCL's ~7k-token prompts a 64-row batch is ~450k tokens of prefill, out of memory on 80 GB for a
    7B model, while 65,536 (the default) keeps prefill activations and KV cache to a few GB.

    ``keep_tokens=True`` (RL rollouts) also returns the prompt and completion token ids and the
    log-probabilities of the sampled tokens under the sampling distribution (temperature / top-p applied),
    recorded step by step as generation goes (:class:`SampledLogprobs`): no full-vocabulary ``output_scores``
    (batch x new tokens x vocab, ~20 GB at the 7B recipe's batch) is ever kept.

    Sampling is exactly temperature + top-p over the plain softmax: the checkpoint's own generation defaults
    (repetition penalty, top-k, ...) are switched off (:func:`checkpoint_generation_defaults_off`), so the
    sampler draws from the distribution the RL trainer scores (its log-probs divide the logits by the same
    temperature). ``load_weights`` takes new weights: a model object (RL: the trainer's model, shared in process)
    or a PEFT adapter directory.
    """

    def __init__(self, model, tokenizer, *, max_new_tokens: int = 256, temperature: float = 0.0,
                 top_p: float = 1.0, seed: int = 0, style: str = "python", name: str = "hf",
                 max_prompt_tokens: int | None = None, micro_batch_size: int | None = None,
                 keep_tokens: bool = False, max_batch_tokens: int = 65536):
        self.model, self.tok, self.style, self.name = model, tokenizer, style, name
        self.keep_tokens = keep_tokens
        self.micro_batch_size = micro_batch_size or (1 if model.device.type == "cpu" else 64)
        self.max_batch_tokens = max_batch_tokens
        self.max_new_tokens, self.temperature, self.top_p = max_new_tokens, temperature, top_p
        self.max_prompt_tokens = max_prompt_tokens or getattr(model.config, "max_position_embeddings", None)
        self.reseed(seed)

    def reseed(self, seed: int) -> None:
        """Seed sampling (only matters with ``temperature > 0``)."""
        import torch

        torch.manual_seed(seed)

    def load_weights(self, model=None, adapter_dir=None) -> None:
        """New weights for the next rollouts: a model object, or a PEFT adapter directory on this base model."""
        if model is not None:
            self.model = model
        if adapter_dir is not None:
            from peft import PeftModel

            base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
            self.model = PeftModel.from_pretrained(base, str(adapter_dir)).eval()

    def generate(self, requests):
        prompts = [render_prompt(self.tok, r.messages, r.tools) for r in requests]
        ids = [self.tok(p, add_special_tokens=False).input_ids for p in prompts]
        limit = (self.max_prompt_tokens or 10**9) - self.max_new_tokens
        out = [Generation("", len(x), 0, error=f"context_overflow: {len(x)} prompt tokens > {limit}")
               for x in ids]
        fits = sorted((i for i, x in enumerate(ids) if len(x) <= limit), key=lambda i: len(ids[i]))
        batch: list[int] = []
        for i in fits:  # ascending length: the newest prompt is the batch's longest (padding included)
            if batch and (len(batch) >= self.micro_batch_size or (len(batch) + 1) * len(ids[i]) > self.max_batch_tokens):
                self._generate(ids, batch, out)
                batch = []
            batch.append(i)
        if batch:
            self._generate(ids, batch, out)
        return out

    def _generate(self, ids: list[list[int]], fits: list[int], out: list[Generation]) -> None:
        import torch

        from transformers import LogitsProcessorList, TemperatureLogitsWarper, TopPLogitsWarper

        batch = self.tok.pad({"input_ids": [ids[i] for i in fits]}, return_tensors="pt").to(self.model.device)
        sample = self.temperature > 0
        # the sampling warpers, in transformers' own order, passed as processors so the recorder sees their output
        # (generate's built-in warpers would run after it); generate itself then adds none (T = 1, top-p = 1)
        procs = LogitsProcessorList()
        if sample and self.temperature != 1.0:
            procs.append(TemperatureLogitsWarper(self.temperature))
        if sample and self.top_p < 1.0:
            procs.append(TopPLogitsWarper(self.top_p))
        record = SampledLogprobs() if self.keep_tokens else None
        if record is not None:
            procs.append(record)
        with torch.no_grad(), checkpoint_generation_defaults_off(self.model):
            gen = self.model.generate(**batch, max_new_tokens=self.max_new_tokens, do_sample=sample,
                                      temperature=1.0, top_p=1.0, top_k=0, repetition_penalty=1.0,
                                      logits_processor=procs, pad_token_id=self.tok.pad_token_id,
                                      eos_token_id=self.tok.eos_token_id, return_dict_in_generate=True)
        new = gen.sequences[:, batch["input_ids"].shape[1]:]
        logps = record.finish(new) if record is not None else None
        for b, (row, i) in enumerate(zip(new, fits)):
            toks = row.tolist()
            if self.tok.eos_token_id in toks:
                toks = toks[:toks.index(self.tok.eos_token_id) + 1]
            n = len(toks)
            text_toks = [t for t in toks if t not in (self.tok.eos_token_id, self.tok.pad_token_id)]
            # other special tokens stay visible: a model that emits them produced malformed output
            out[i] = Generation(self.tok.decode(text_toks, skip_special_tokens=False), len(ids[i]), n)
            if self.keep_tokens:
                out[i].prompt_ids, out[i].completion_ids = list(ids[i]), toks
                out[i].logprobs = logps[b, :n].tolist()


class SampledLogprobs:
    """A logits processor (last in the list) that records the log-probability of each sampled token under the
    scores the sampler draws from, one step behind: at step t+1 it reads the token chosen at step t from
    ``input_ids``; :meth:`finish` takes the last one from the output. Holds one step's scores at a time
    (batch x vocab), where ``output_scores`` holds every step's. Written here because transformers offers only
    ``output_scores`` + ``compute_transition_scores``, which keep them all.

    >>> import torch
    >>> r = SampledLogprobs()
    >>> _ = r(torch.tensor([[5]]), torch.tensor([[0.0, 0.0]]))           # step 0 scores
    >>> _ = r(torch.tensor([[5, 1]]), torch.tensor([[2.0, 0.0]]))        # token 1 was drawn at step 0
    >>> [round(x, 4) for x in r.finish(torch.tensor([[1, 0]]))[0].tolist()]  # token 0 at step 1
    [-0.6931, -0.1269]
    """

    def __init__(self):
        self.steps, self.pending = [], None

    def _resolve(self, tokens):
        import torch

        s = self.pending.float()
        self.steps.append(s.gather(1, tokens[:, None]).squeeze(1) - torch.logsumexp(s, -1))

    def __call__(self, input_ids, scores):
        if self.pending is not None:
            self._resolve(input_ids[:, -1])
        self.pending = scores
        return scores

    def finish(self, new_tokens):
        """Log-probs ``(batch, new tokens)`` of the generated tokens (``new_tokens``: generate's new columns)."""
        import torch

        if self.pending is not None:
            self._resolve(new_tokens[:, -1])
            self.pending = None
        return torch.stack(self.steps, 1) if self.steps else new_tokens.new_zeros((len(new_tokens), 0)).float()


def _http_messages(messages: list[dict]) -> list[dict]:
    """Tool results as one user message holding BFCL's ``repr`` of them (BFCL's prompting handlers do this)."""
    out, pending = [], []
    for m in messages + [{"role": "_end"}]:
        if m["role"] == "tool":
            pending.append({"role": "tool", "name": m.get("name"), "content": m["content"]})
            continue
        if pending:
            out.append({"role": "user", "content": repr(pending)})
            pending = []
        if m["role"] != "_end":
            out.append({"role": m["role"], "content": m["content"]})
    return out


class OpenAIPolicy:
    """Any OpenAI-compatible chat endpoint. Key from ``$<api_key_env>`` (may be unset for local servers)."""

    def __init__(self, model: str, base_url: str = "http://127.0.0.1:8000/v1", *, api_key_env: str = "OPENAI_API_KEY",
                 max_concurrency: int = 8, retries: int = 3, backoff: float = 0.5, timeout: float = 120.0,
                 temperature: float = 0.0, max_tokens: int = 512, seed: int = 0, style: str = "python"):
        self.model, self.base_url, self.name, self.style = model, base_url.rstrip("/"), f"openai:{model}", style
        self.api_key = os.environ.get(api_key_env, "")
        self.max_concurrency, self.retries, self.backoff, self.timeout = max_concurrency, retries, backoff, timeout
        self.temperature, self.max_tokens, self.seed = temperature, max_tokens, seed

    def reseed(self, seed: int) -> None:
        self.seed = seed

    def load_weights(self, model=None, adapter_dir=None) -> None:
        """The server owns its weights: serve the new ones there (e.g. ``vllm serve --enable-lora``)."""
        if model is not None or adapter_dir is not None:
            raise PolicyError("an OpenAI-compatible endpoint cannot take weights from here; "
                              "load them into the server and pass its model name")

    def _post(self, payload: dict) -> dict:
        data = json.dumps(payload).encode()
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = None
        for attempt in range(self.retries + 1):
            req = urllib.request.Request(f"{self.base_url}/chat/completions", data=data, headers=headers)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}"
                if err.code not in (408, 409, 429) and err.code < 500:
                    break
            except (urllib.error.URLError, TimeoutError, ConnectionError, json.JSONDecodeError) as err:
                last = f"{type(err).__name__}: {getattr(err, 'reason', err)}"
            time.sleep(self.backoff * 2 ** attempt)
        raise PolicyError(f"endpoint {self.base_url} failed after {self.retries + 1} attempts ({last}); "
                          "check that the server is up (e.g. `vllm serve MODEL`) and base_url is right")

    def _one(self, req: StepRequest) -> Generation:
        payload = {"model": self.model, "messages": _http_messages(req.messages), "temperature": self.temperature,
                   "max_tokens": self.max_tokens, "seed": self.seed}
        if req.tools:
            payload["tools"] = req.tools
        resp = self._post(payload)
        try:
            msg = resp["choices"][0]["message"]
        except (KeyError, IndexError, TypeError):
            raise PolicyError(f"endpoint {self.base_url} returned no choices: {str(resp)[:200]}") from None
        text = msg.get("content") or ""
        for tc in msg.get("tool_calls") or []:
            fn = tc.get("function", {})
            text += f'\n<tool_call>\n{{"name": {json.dumps(fn.get("name"))}, "arguments": {fn.get("arguments") or "{}"}}}\n</tool_call>'
        usage = resp.get("usage") or {}
        return Generation(text.strip(), usage.get("prompt_tokens"), usage.get("completion_tokens"))

    def generate(self, requests):
        with ThreadPoolExecutor(max_workers=self.max_concurrency) as pool:
            return list(pool.map(self._one, requests))


def make_policy(spec: str, *, seed: int = 0, style: str = "python", base_url: str = "http://127.0.0.1:8000/v1",
                max_new_tokens: int = 256, temperature: float = 0.0, **kw):
    """``oracle`` | ``openai:<served-model-name>`` | ``vllm:<model spec>`` (the vLLM backend serving a model
    directory / ``toy``: :mod:`parl_mt_lib.backends_vllm`) | ``toy`` | a model directory | a hub id."""
    if spec == "oracle":
        return OraclePolicy(style=style, **kw)
    if isinstance(spec, str) and spec.startswith("vllm:"):
        from .backends_vllm import VLLMBackend

        return VLLMBackend(model_path=spec.split(":", 1)[1], seed=seed, style=style, temperature=temperature,
                           max_new_tokens=max_new_tokens, name=spec, **kw)
    if isinstance(spec, str) and spec.startswith("openai:"):
        return OpenAIPolicy(spec.split(":", 1)[1], base_url, seed=seed, style=style, temperature=temperature,
                            max_tokens=max_new_tokens, **kw)
    from .models import load_model

    model, tok = load_model(spec)
    return HFPolicy(model, tok, seed=seed, style=style, name=str(spec), max_new_tokens=max_new_tokens,
                    temperature=temperature, **kw)
