"""The PAG pipeline end to end: tasks -> per-step examples -> verification -> augmentation -> dataset + card.

Everything is built in a temporary directory and moved into place at the end, so a failure (say,
the teacher endpoint is down) leaves no partial dataset behind. Reuse rule: the directory's ``fingerprint.json``
holds the build's config + input fingerprints (BFCL data version; teacher / verifier models where used; see
:mod:`parl_mt_lib.runtime`) and ``"output"``, a hash of the train / validation / tasks text (what later runs
record as this input). A build into a directory holding the same config fingerprint returns the stored card
without rebuilding (``reuse=False`` forces a rebuild); another config rebuilds and replaces that PAG build (a
rebuild never resumes, and runs trained on the old data see a changed input fingerprint); a directory that is
not a PAG build is refused.

Example:
    >>> import tempfile
    >>> card = build_pag(PAGConfig(n_tasks=6, seed=0), tempfile.mkdtemp() + "/pag", progress=False)
    >>> card["n_tasks"], card["overlap_with_eval"], card["gold_pass_rate"]
    (6, 0, 1.0)
"""
from __future__ import annotations

import hashlib
import json
import random
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from tqdm.auto import tqdm

from .runtime import (ConfigError, artifact_card, atomic_dir, atomic_write_json, fingerprint, input_fingerprint,
                      provenance, read_fingerprint, write_fingerprint)
from .synth import SynthConfig, entry_from_dict, entry_to_dict, synthesize

SOURCES = ("synthetic", "bfcl_holdout")
VERIFIERS = ("lexical", "policy", "none")


@dataclass
class PAGConfig:
    """All knobs of notebook 01 (saved in the card)."""

    source: str = "synthetic"          # synthetic | bfcl_holdout (the paper's ~200 BFCL training tasks)
    n_tasks: int = 240
    n_holdout: int = 200               # bfcl_holdout: BFCL ids used for training
    teacher: str = "template"          # template | hf | openai
    teacher_model: str | None = None   # hf: model dir / id; openai: served model name
    base_url: str = "http://127.0.0.1:8000/v1"
    teacher_concurrency: int = 8
    verifier: str = "lexical"          # which filter decides what is kept: lexical | policy | none
    verifier_model: str = "toy"        # the target policy for model-aware verification
    verify_k: int = 1
    verify_threshold: float = 1.0
    verify_limit: int | None = 64      # policy verification on at most this many examples (None: all)
    paraphrase: bool = True
    schema: bool = True
    mask: bool = True
    mask_rate: float = 0.15
    augment_fraction: float = 0.3      # share of kept train examples that get each augmentation
    val_fraction: float = 0.1
    seed: int = 0
    synth: dict = field(default_factory=dict)  # SynthConfig overrides: turns, calls_per_turn, classes, ...

    def __post_init__(self):
        if self.source not in SOURCES:
            raise ConfigError(f"unknown source {self.source!r}; choose from {SOURCES}")
        if self.verifier not in VERIFIERS:
            raise ConfigError(f"unknown verifier {self.verifier!r}; choose from {VERIFIERS}")
        known = {f.name for f in fields(SynthConfig)}
        bad = set(self.synth) - known
        if bad:
            raise ConfigError(f"unknown synth knobs {sorted(bad)}; known: {sorted(known)}")
        for k in ("turns", "calls_per_turn", "classes"):
            if k in self.synth:
                self.synth[k] = tuple(self.synth[k])


def _tasks(cfg: PAGConfig, teacher):
    from .bfcl import load_entries
    from .splits import assert_disjoint, holdout_split

    if cfg.source == "synthetic":
        tasks = synthesize(SynthConfig(**{"n_tasks": cfg.n_tasks, "seed": cfg.seed, **cfg.synth}), teacher)
        return tasks, assert_disjoint(tasks), None
    split = holdout_split(cfg.n_holdout, cfg.seed)
    train = set(split["train_ids"])
    tasks = [e for e in load_entries("all") if e.id in train]
    rep = {"ids": [], "requests": [], "gold_sequences": [], "n_overlapping": 0}
    assert not train & set(split["eval_ids"]), "hold-out split is not disjoint"
    return tasks, rep, split


def _token_stats(examples, tokenizer) -> dict:
    from .pag import conversation_tokens

    if not examples:
        return {}
    sample = examples[:: max(1, len(examples) // 200)]
    prog = [conversation_tokens(tokenizer, e["progress_messages"]) for e in sample]
    full = [conversation_tokens(tokenizer, e["plain_messages"]) for e in sample]
    comp = [len(tokenizer(e["completion_progress"], add_special_tokens=False).input_ids) for e in sample]

    def s(v):
        return {"mean": round(statistics.mean(v), 1), "max": max(v)}

    return {"tokenizer": getattr(tokenizer, "name_or_path", "?"), "n_sampled": len(sample),
            "conversation_tokens_progress": s(prog), "conversation_tokens_full_history": s(full),
            "completion_tokens_progress": s(comp)}


def pag_fingerprint(cfg: PAGConfig, verify_generate=None) -> dict:
    """The build's card: its config + fingerprints of its inputs (the BFCL data version; the HF teacher and the
    verifier model where they are used). A ``verify_generate`` function cannot be fingerprinted: such a build
    gets a one-off fingerprint and is never reused."""
    import uuid
    from importlib import metadata

    inputs = {"bfcl-eval": fingerprint({"bfcl-eval": metadata.version("bfcl-eval")})}
    if cfg.teacher == "hf":
        inputs["teacher"] = input_fingerprint(str(cfg.teacher_model))
    if verify_generate is not None:
        inputs["verifier"] = fingerprint({"custom verify_generate": uuid.uuid4().hex})
    elif cfg.verifier == "policy" or cfg.verify_limit:
        inputs["verifier"] = input_fingerprint(cfg.verifier_model)
    return artifact_card(asdict(cfg), inputs)


def build_pag(cfg: PAGConfig = PAGConfig(), out_dir="results/01_pag", *, progress: bool = True,
              tokenizer=None, verify_generate=None, reuse: bool = True) -> dict:
    """Run the whole pipeline; write ``dataset/``, ``train.jsonl``, ``validation.jsonl``, ``tasks.jsonl``,
    ``card.json``, ``fingerprint.json`` (and ``split.json`` for the BFCL hold-out source) into ``out_dir``;
    return the card. With ``reuse``, a directory already holding this config's build (same fingerprint) is
    returned as it is (module docstring: the reuse rule).

    ``verify_generate`` overrides the verifier model (a ``generate(list[(messages, prefix)])`` function).
    """
    from datasets import Dataset, DatasetDict

    from .evaluate import score_entry
    from .pag import (augment_mask, augment_paraphrase, augment_schema, executes_same, hf_generate_fn,
                      lexical_verify, policy_verify, step_examples)
    from .progress import make_teacher

    t0 = time.time()
    out = Path(out_dir)
    build_card = pag_fingerprint(cfg, verify_generate)
    if (out / "card.json").exists():
        old = read_fingerprint(out)
        if reuse and old is not None and old["fingerprint"] == build_card["fingerprint"]:
            return json.loads((out / "card.json").read_text())
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"{out} holds files that are not a PAG build (no card.json); pass another out_dir "
                          "(nothing was overwritten)")
    teacher = make_teacher(cfg.teacher, seed=cfg.seed, model=cfg.teacher_model, base_url=cfg.base_url,
                           **({"max_concurrency": cfg.teacher_concurrency} if cfg.teacher == "openai" else {}))
    tasks, overlap, split = _tasks(cfg, teacher)
    gold_ok = sum(score_entry(t, t.gold).valid for t in tasks)
    by_id = {t.id: t for t in tasks}
    rng = random.Random(cfg.seed)
    order = sorted(by_id)
    rng.shuffle(order)
    n_val = max(1, round(cfg.val_fraction * len(order))) if len(order) > 1 else 0
    val_ids = set(order[:n_val])

    workers = cfg.teacher_concurrency if cfg.teacher != "template" else 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        per_task = list(tqdm(pool.map(lambda t: step_examples(t, teacher), tasks), total=len(tasks),
                             desc="PAG examples", disable=not progress))
    examples = [ex for exs in per_task for ex in exs]

    # ---- verification
    filters = {"lexical": {"checked": 0, "passed": 0, "reasons": {}}}
    lex = []
    for ex in examples:
        ok, why = lexical_verify(ex)
        lex.append(ok)
        filters["lexical"]["checked"] += 1
        filters["lexical"]["passed"] += ok
        if not ok:
            key = why.split(":")[0]
            filters["lexical"]["reasons"][key] = filters["lexical"]["reasons"].get(key, 0) + 1
    pol = [None] * len(examples)
    if cfg.verifier == "policy" or verify_generate is not None or cfg.verify_limit:
        idx = [i for i, ex in enumerate(examples) if ex["kind"] == "call"]
        if cfg.verifier != "policy" and cfg.verify_limit:
            idx = idx[: cfg.verify_limit]  # report-only pass rate (a mechanism check with the toy)
        verifier_name = "custom" if verify_generate is not None else cfg.verifier_model
        if verify_generate is None:
            from .models import load_model

            model, tok = load_model(cfg.verifier_model)
            verify_generate = hf_generate_fn(model, tok)
        verdicts = policy_verify([examples[i] for i in idx], by_id, verify_generate, cfg.verify_k,
                                 cfg.verify_threshold)
        for i, (ok, _) in zip(idx, verdicts):
            pol[i] = ok
        filters["policy"] = {"model": verifier_name,
                             "checked": len(idx), "passed": sum(ok for ok, _ in verdicts), "k": cfg.verify_k,
                             "threshold": cfg.verify_threshold, "decides": cfg.verifier == "policy"}
    if cfg.verifier == "lexical":
        keep = lex
    elif cfg.verifier == "policy":
        keep = [p if p is not None else True for p in pol]  # no-call steps have nothing to reproduce
    else:
        keep = [True] * len(examples)
    kept = [ex for ex, k in zip(examples, keep) if k]

    # ---- augmentation (train side only)
    aug_counts = {"paraphrase": 0, "schema": 0, "mask": 0, "failed_execution_check": 0}
    train = [ex for ex in kept if ex["task_id"] not in val_ids]
    val = [ex for ex in kept if ex["task_id"] in val_ids]
    extra = []
    for ex in train:
        task = by_id[ex["task_id"]]
        cands = []
        if cfg.paraphrase and rng.random() < cfg.augment_fraction:
            cands.append(augment_paraphrase(ex, teacher, cfg.seed))
        if cfg.schema and rng.random() < cfg.augment_fraction:
            cands.append(augment_schema(ex, task, rng))
        if cfg.mask and rng.random() < cfg.augment_fraction:
            cands.append(augment_mask(ex, rng, cfg.mask_rate))
        for a in cands:
            if executes_same(a, task):
                extra.append(a)
                aug_counts[a["augment"]] += 1
            else:
                aug_counts["failed_execution_check"] += 1
    train += extra

    # ---- write (temporary directory first; moved into place at the end)
    with atomic_dir(out) as tmp:
        lines = {}
        for name, rows in (("train", train), ("validation", val)):
            lines[name] = "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)
            (tmp / f"{name}.jsonl").write_text(lines[name])
        lines["tasks"] = "".join(json.dumps(entry_to_dict(t), default=list) + "\n" for t in tasks)
        (tmp / "tasks.jsonl").write_text(lines["tasks"])
        DatasetDict({n: Dataset.from_list(_flat(r)) for n, r in (("train", train), ("validation", val))}
                    ).save_to_disk(str(tmp / "dataset"))
        if split:
            atomic_write_json(tmp / "split.json", split)
        data_fp = hashlib.sha256((lines["train"] + lines["validation"]).encode()).hexdigest()[:16]
        write_fingerprint(tmp, {**build_card, "output": fingerprint({n: hashlib.sha256(t.encode()).hexdigest()
                                                                      for n, t in lines.items()})})
        if tokenizer is None:
            from transformers import AutoTokenizer

            from .models import resolve_model_path

            tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("toy"))
        card = {
            "source": cfg.source, "n_tasks": len(tasks), "n_tasks_validation": len(val_ids),
            "n_steps": len(examples), "n_call_steps": sum(e["kind"] == "call" for e in examples),
            "n_examples": {"train": len(train), "validation": len(val)},
            "kept": len(kept), "dropped": len(examples) - len(kept), "filters": filters,
            "augmentation": aug_counts, "gold_pass_rate": gold_ok / len(tasks),
            "overlap_with_eval": overlap["n_overlapping"], "overlap_report": overlap,
            "token_stats": _token_stats(examples, tokenizer), "teacher": getattr(teacher, "name", cfg.teacher),
            "teacher_fallbacks": getattr(teacher, "fallbacks", 0), "fingerprint": data_fp,
            "config_fingerprint": build_card["fingerprint"],
            "seeds": [cfg.seed], "config": asdict(cfg),
            "provenance": provenance(seeds=[cfg.seed], wall_clock_s=round(time.time() - t0, 2)),
        }
        atomic_write_json(tmp / "card.json", card)
    return card


def _flat(rows: list[dict]) -> list[dict]:
    """Arrow-friendly rows: message lists as JSON strings (tool messages carry a ``name`` others lack)."""
    return [{**r, "progress_messages": json.dumps(r["progress_messages"]),
             "plain_messages": json.dumps(r["plain_messages"])} for r in rows]


def load_pag(out_dir="results/01_pag"):
    """``(examples by split, tasks by id)`` from a built PAG directory."""
    out = Path(out_dir)
    if not (out / "card.json").exists():
        raise ConfigError(f"no PAG dataset in {out}; run notebooks/01_pag_synthesis.ipynb (or build_pag) first")
    from .envs import assert_trainable, tasks_from_refs
    from .envs.base import OPTIONAL

    rows = [json.loads(line) for line in (out / "tasks.jsonl").read_text().splitlines()]
    # a task of a package benchmark (τ-bench) stored whole, not as a reference, escapes its split check: refuse it
    smuggled = [d.get("id") for d in rows if "benchmark" not in d and str(d.get("id", "")).startswith(tuple(OPTIONAL))]
    if smuggled:
        raise ConfigError(f"{out}/tasks.jsonl stores {smuggled[0]!r} (and {len(smuggled) - 1} more) whole; tasks of "
                          f"{sorted(OPTIONAL)} must be references (build with python -m parl_mt_lib.envs.tau2_pag)")
    # a benchmark package's tasks (τ-bench) are stored as references, read back from the package and asserted
    # trainable (never an evaluation task); BFCL and synthetic tasks are stored whole
    refs = iter(tasks_from_refs([d for d in rows if "benchmark" in d]))
    tasks, whole = {}, []
    for d in rows:
        t = next(refs) if "benchmark" in d else entry_from_dict(d)
        tasks[t.id] = t
        if "benchmark" not in d:
            whole.append(t)
    from .splits import load_split

    if load_split(out) is None:  # BFCL's overlap rule; a BFCL hold-out split is checked by its own rule (rl_tasks)
        assert_trainable(whole)  # (references were checked by tasks_from_refs)
    splits = {n: [json.loads(l) for l in (out / f"{n}.jsonl").read_text().splitlines()]
              for n in ("train", "validation")}
    unknown = sorted({e["task_id"] for rows_ in splits.values() for e in rows_} - set(tasks))
    if unknown:
        raise ConfigError(f"{out}: examples of task(s) {unknown[:3]} that tasks.jsonl does not hold; rebuild the PAG "
                          "directory")
    return splits, tasks
