"""GPU measurements of the 7B recipes on a random-init model of Qwen2.5-7B's exact shape (no download): SFT tokens/s
and one (or more) PAG-RL iterations of ``recipes/qwen2.5-7b-instruct/pag_rl.yaml`` at BFCL prompt lengths --
rollout tokens/s, update tokens/s, peak memory, wall-clock per iteration. Procedure and expected numbers:
``recipes/README.md`` ("GPU measurements").

    .venv/bin/python benchmarks/gpu_7b.py --out results/gpu_7b                     # on the GPU machine
    .venv/bin/python benchmarks/gpu_7b.py --shape tiny --out /tmp/gpu_7b_smoke     # the same code path on a CPU

Needs notebook 01's BFCL-docs PAG build (``results/01_pag``: ``make reproduce`` or run 01 alone) for the RL tasks;
the tokenizer is the toy's (ids < Qwen's vocabulary; BFCL prompts come out at ~7-9k tokens, Qwen's are ~7k).
"""
import argparse
import json
import time
from pathlib import Path

# Qwen2.5-7B-Instruct's config.json (the shape; weights are random)
QWEN25_7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768, rope_theta=1000000.0,
                 rms_norm_eps=1e-6, tie_word_embeddings=False, hidden_act="silu", sliding_window=None)
TINY = dict(QWEN25_7B, hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=4096)


def build(shape: dict, out: Path) -> Path:
    """Random-init weights of the shape, saved with the toy's tokenizer (bf16 on a GPU)."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from parl_mt_lib.toy_model import build_toy_model

    if (out / "config.json").exists():  # reused only when it holds this shape (a tiny smoke run must not be timed
        import json                      # as the 7B one); another shape stops with one line

        saved = json.loads((out / "config.json").read_text())
        diff = {k: (saved.get(k), v) for k, v in shape.items() if k != "vocab_size" and saved.get(k) != v}
        if diff:
            shown = ", ".join(f"{k}: {a} != {b}" for k, (a, b) in sorted(diff.items())[:3])
            raise SystemExit(f"{out} holds weights of another shape ({shown}); pass another --out or delete it")
        return out
    tok = AutoTokenizer.from_pretrained(build_toy_model())
    cfg = Qwen2Config(**{**shape, "vocab_size": max(shape["vocab_size"], len(tok))}, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen2ForCausalLM(cfg).to(dtype)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    del model
    return out


def sft_tokens_per_s(path: Path, seq: int, steps: int) -> dict:
    """LoRA r16 all-linear, gradient checkpointing, batch 1 x ``seq`` tokens, AdamW, bf16 (the SFT recipe's setup)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from parl_mt_lib.models import load_model

    model, _ = load_model(str(path))
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM"))
    model.gradient_checkpointing_enable()
    model.enable_input_require_grads()
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, 4096, (1, seq), device=model.device)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + 1):  # step 0 warms up
        t0 = time.perf_counter()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        if i:
            times.append(time.perf_counter() - t0)
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    del model, opt
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"seq": seq, "steps": steps, "s_per_step": sum(times) / len(times),
            "tokens_per_s": seq / (sum(times) / len(times)), "peak_gib": peak}


def rl_iterations(path: Path, out: Path, iterations: int, backend: str, overrides: dict) -> list[dict]:
    from parl_mt_lib.rl import load_rl_recipe, train_rl

    recipe = load_rl_recipe("recipes/qwen2.5-7b-instruct/pag_rl.yaml", {
        "init": str(path), "iterations": iterations, "eval_tasks": 0, "save_every": 10**6,
        "rollout_backend": backend, **overrides})
    train_rl(recipe, out / f"rl_{backend}", progress=True, resume=False)
    rows = [json.loads(x) for x in (out / f"rl_{backend}" / "iterations.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("samples", None)
        steps, gen = r["n_steps"], r["generated_tokens_per_step"] * r["n_steps"]
        r["rollout_generated_tok_s"] = gen / r["rollout_s"]
        r["update_tok_s"] = (r["prompt_tokens_per_step"] + r["generated_tokens_per_step"]) * steps / r["update_s"]
        r["iteration_s"] = r["rollout_s"] + r["update_s"]
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/gpu_7b")
    ap.add_argument("--shape", choices=("qwen2.5-7b", "tiny"), default="qwen2.5-7b")
    ap.add_argument("--weights", default=None, help="where the random-init weights go (default: <out>/weights)")
    ap.add_argument("--sft-seq", type=int, default=12288)
    ap.add_argument("--sft-steps", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=1)
    ap.add_argument("--backend", default="vllm", help="rollout_backend: vllm | hf")
    ap.add_argument("--rl-override", action="append", default=[], help="KEY=YAML, e.g. tasks_per_iteration=4")
    args = ap.parse_args()
    import torch
    import yaml

    from parl_mt_lib.runtime import atomic_write_json, provenance

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tiny = args.shape == "tiny"
    t0 = time.time()
    path = build(TINY if tiny else QWEN25_7B, Path(args.weights) if args.weights else out / "weights")
    res = {"shape": args.shape, "build_s": round(time.time() - t0, 1),
           "sft": sft_tokens_per_s(path, 256 if tiny else args.sft_seq, 2 if tiny else args.sft_steps)}
    overrides = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in args.rl_override)}
    if tiny:
        overrides = {"tasks_per_iteration": 2, "group_size": 2, "max_new_tokens": 16, "bf16": False,
                     "gradient_checkpointing": False, "max_steps_per_turn": 2, **overrides}
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    res["rl"] = rl_iterations(path, out, args.iterations, args.backend, overrides)
    res["provenance"] = provenance(wall_clock_s=round(time.time() - t0, 1))
    atomic_write_json(out / "gpu_7b.json", res)
    print(json.dumps({"sft": res["sft"], "rl": [{k: r[k] for k in ("iteration", "rollout_s", "update_s", "iteration_s",
                                                                   "rollout_generated_tok_s", "update_tok_s",
                                                                   "peak_mem_mb", "logprob_gap_mean")}
                                                for r in res["rl"]]}, indent=1))


if __name__ == "__main__":
    main()
