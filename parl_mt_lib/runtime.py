"""Process-level plumbing: errors, paths, thread count, atomic writes, provenance.

Example:
    >>> from parl_mt_lib.runtime import atomic_write_json, provenance
    >>> import tempfile, os, json
    >>> d = tempfile.mkdtemp(); atomic_write_json(os.path.join(d, "x.json"), {"a": 1})
    >>> json.load(open(os.path.join(d, "x.json")))
    {'a': 1}
    >>> "bfcl-eval" in provenance()["packages"]
    True
"""
from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import tempfile
import time
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("parl-mt", "bfcl-eval", "torch", "transformers", "trl", "peft", "datasets", "tokenizers",
            "accelerate", "papermill", "numpy")


class ConfigError(ValueError):
    """Bad user input (config, category, path, parameter). The message says what to do."""


def cache_dir() -> Path:
    """Where built artefacts (toy model, BFCL scratch dir) live: ``$PARL_MT_CACHE`` or ``<repo>/.cache``."""
    path = Path(os.environ.get("PARL_MT_CACHE", REPO_ROOT / ".cache"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def repo_path(path: str | os.PathLike) -> Path:
    """A relative path is taken from the repo root, so notebooks write to the same ``results/``
    whatever directory Jupyter, papermill or nbval runs them from."""
    path = Path(path).expanduser()
    return path if path.is_absolute() else REPO_ROOT / path


def smoke_mode(flag: bool = False) -> bool:
    """A notebook's ``SMOKE`` parameter, or ``PARL_MT_SMOKE=1`` in the environment (how nbval/CI switch it on)."""
    return bool(flag) or os.environ.get("PARL_MT_SMOKE", "0") == "1"


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op thread count deliberately (default ``$PARL_MT_THREADS`` or 1).

    Tiny models on 2 cores run an order of magnitude slower when threads are oversubscribed,
    so the toy default is a single thread; pass more for real models.
    """
    n = int(n or os.environ.get("PARL_MT_THREADS", 1))
    import torch

    torch.set_num_threads(n)
    return n


def resolve_workers(workers: int | None, n_jobs: int) -> int:
    """How many processes run independent jobs side by side: ``workers``, or by default one per CPU core on
    the CPU and 1 when a GPU is visible (two 7B trainings do not share one card); never more than the jobs.

    >>> resolve_workers(4, 3), resolve_workers(1, 6), resolve_workers(2, 0)
    (3, 1, 1)
    """
    if workers is None:
        import torch

        workers = 1 if torch.cuda.is_available() else (os.cpu_count() or 1)
    if int(workers) < 1:
        raise ConfigError(f"workers must be >= 1 (got {workers}); use 1 to run everything in this process")
    return max(1, min(int(workers), n_jobs))


def run_jobs(fn, jobs: list[dict], *, workers: int = 1, threads: int = 1, on_done=None, desc: str = "jobs",
             progress: bool = True) -> list:
    """``[fn(**job) for job in jobs]``, ``workers`` at a time; ``on_done(i, result)`` runs here as each finishes
    (save progress there, so a failure or a kill loses only the unfinished jobs).

    Written by hand because the SFT grid's cells (one training each) are independent, and on a 2-core CPU two
    single-thread trainings side by side get ~1.4x the work done of one two-thread training (LOG.md). With
    ``workers == 1`` the jobs run in this process with its thread setting; otherwise in spawned processes (torch
    is not fork-safe) with ``threads`` torch threads each. ``fn`` must be importable (a module-level function).
    A job's exception is re-raised here after the jobs not yet started are cancelled.
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    from tqdm.auto import tqdm

    results = [None] * len(jobs)
    pool = None
    if workers > 1:
        pool = ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"),
                                   initializer=set_threads, initargs=(threads,))
    with tqdm(total=len(jobs), desc=desc, disable=not progress) as bar:
        try:
            if pool is None:
                finished = ((i, fn(**job)) for i, job in enumerate(jobs))
            else:
                futures = {pool.submit(fn, **job): i for i, job in enumerate(jobs)}
                finished = ((futures[fut], fut.result()) for fut in as_completed(futures))
            for i, result in finished:
                results[i] = result
                if on_done is not None:
                    on_done(i, result)
                bar.update()
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)
    return results


def load_yaml_recipe(path, cls, overrides: dict | None = None, hint: str = "recipes/"):
    """A dataclass ``cls`` from a YAML file + non-None ``overrides``; a missing file, bad YAML, unknown keys or
    bad values stop with a one-line :class:`ConfigError` (``hint`` says where recipes live)."""
    import dataclasses

    import yaml

    p = repo_path(path)
    if not p.exists():
        raise ConfigError(f"recipe {path} not found; see {hint}")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe {path} is not valid YAML ({str(err).splitlines()[0]})") from None
    raw.update({k: v for k, v in (overrides or {}).items() if v is not None})
    known = sorted(f.name for f in dataclasses.fields(cls))
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"unknown recipe key(s) {unknown} in {path}; known keys: {', '.join(known)}")
    try:
        return cls(**raw)
    except TypeError as err:
        raise ConfigError(f"bad recipe {path}: {err}") from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write via a temporary file in the same directory and ``os.replace``: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def atomic_dir(path: str | os.PathLike):
    """Build a directory in a temporary sibling; it replaces ``path`` only if the block succeeds,
    so a failure never leaves a half-written directory (or destroys the previous one).

    >>> import tempfile; d = Path(tempfile.mkdtemp()) / "out"
    >>> with atomic_dir(d) as tmp:
    ...     _ = (tmp / "a.txt").write_text("x")
    >>> sorted(p.name for p in d.iterdir())
    ['a.txt']
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}."))
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        tmp.rename(path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_json(path: str | os.PathLike, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def append_jsonl(path: str | os.PathLike, row: dict) -> None:
    """Append one JSON line and fsync, so a killed run loses at most the line being written.

    A torn last line (no trailing newline) left by a killed writer is cut off first, so the
    new row never fuses with it.
    """
    path = Path(path)
    if path.exists() and path.stat().st_size:
        with open(path, "rb+") as fh:
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                fh.seek(0)
                fh.truncate(fh.read().rfind(b"\n") + 1)
    with open(path, "a") as fh:
        fh.write(json.dumps(row, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read JSON lines, skipping a torn last line left by an interrupted writer."""
    rows = []
    if not Path(path).exists():
        return rows
    with open(path) as fh:
        for line in fh:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows


def git_sha() -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
        return (sha or "unknown") + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def device_info() -> dict:
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def provenance(**extra) -> dict:
    """Package versions (bfcl-eval included), git SHA, device and a timestamp; ``extra`` is merged in."""
    pkgs = {}
    for name in PACKAGES:
        try:
            pkgs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pkgs[name] = None
    return {"packages": pkgs, "git_sha": git_sha(), "device": device_info(),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}
