"""Process-level plumbing: errors, paths, thread count, atomic writes, provenance, and artifact fingerprints.

**Fingerprints: nothing is reused silently.** Every artifact that a later call may reuse (a PAG build, an SFT
cell, an RL seed, an ``evaluate`` run) is keyed by :func:`fingerprint` (sha256 of canonical JSON, 16 hex digits)
of its config *and* of the fingerprints of its inputs (data, checkpoints, tasks), recorded as the directory's
``fingerprint.json`` = ``{"fingerprint", "config", "inputs": {name: fingerprint}}`` (:func:`artifact_card`).
An input is known by (:func:`input_fingerprint`): the content hash a directory records (``"output"``, cheap for
data: a PAG build's train / validation / tasks text); else the fingerprint of the run that wrote it
(``train_sft`` and the RL grid write the run's ``fingerprint.json`` into ``final/``); else a content hash of its files
(:func:`content_fingerprint`: ``toy``, a downloaded model; files over 2 MiB hash only their size and first and
last MiB, so a 7B checkpoint costs milliseconds); else its name (``oracle``, ``openai:NAME``, a hub id not on
disk). Two rules use it. A *grid* (the caller asked for reuse of finished cells, :mod:`parl_mt_lib.grid`)
reuses a cell only when its fingerprint matches and otherwise re-runs it, replacing that cell's own outputs.
Anything else resuming into a directory (:func:`claim_dir`) resumes only the same fingerprint and otherwise
stops with a one-line :class:`ConfigError` that names what changed (nothing is deleted). Code is not part of
a fingerprint (every commit would invalidate everything): after changing code that alters an artifact, give
it a new directory or delete the old one.

Example:
    >>> from parl_mt_lib.runtime import atomic_write_json, provenance
    >>> import tempfile, os, json
    >>> d = tempfile.mkdtemp(); atomic_write_json(os.path.join(d, "x.json"), {"a": 1})
    >>> json.load(open(os.path.join(d, "x.json")))
    {'a': 1}
    >>> "bfcl-eval" in provenance()["packages"]
    True
    >>> fingerprint({"b": [1, 2], "a": 1}) == fingerprint({"a": 1, "b": (1, 2)})  # canonical: key order, tuples
    True
    >>> card = artifact_card({"lr": 0.1}, {"data": "0123456789abcdef"})
    >>> claim_dir(os.path.join(d, "run"), card), claim_dir(os.path.join(d, "run"), card)  # (fresh, same run)
    (False, True)
    >>> claim_dir(os.path.join(d, "run"), artifact_card({"lr": 0.2}, {"data": "0123456789abcdef"}))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    parl_mt_lib.runtime.ConfigError: ... holds a run with another config (changed: config.lr); pass another output directory, or delete it to start over (nothing was overwritten)
"""
from __future__ import annotations

import hashlib
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


def cpu_budget() -> int:
    """CPU cores this process and the workers it starts may use: ``$PARL_MT_CPUS``, else the machine's. ``make
    test`` sets 1: each of its two pytest-xdist workers gets one core, so a notebook asking for ``threads = 2`` or
    one grid worker per core does not oversubscribe the CPU that the other worker is using (seen 2026-12-03: the
    smoke notebooks took ~3x longer beside a second worker than alone).

    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"PARL_MT_CPUS": "1"}):  # restores the caller's value after
    ...     (cpu_budget(), resolve_workers(None, 4))
    (1, 1)
    """
    env = os.environ.get("PARL_MT_CPUS", "").strip()
    if not env:
        return os.cpu_count() or 1
    if not env.isdigit() or int(env) < 1:
        raise ConfigError(f"PARL_MT_CPUS must be a whole number >= 1 (got {env!r}); unset it to use every core")
    return int(env)


def set_threads(n: int | None = None) -> int:
    """Set torch's intra-op thread count deliberately (default ``$PARL_MT_THREADS`` or 1), never above
    :func:`cpu_budget`.

    Tiny models on 2 cores run an order of magnitude slower when threads are oversubscribed,
    so the toy default is a single thread; pass more for real models.
    """
    n = min(int(n or os.environ.get("PARL_MT_THREADS", 1)), cpu_budget())
    import torch

    torch.set_num_threads(n)
    return n


def _worker_init(threads: int, parent: int | None = None) -> None:
    """A spawned job worker: its torch threads, and (Linux) exit when the parent dies.

    Without the second part a killed notebook (papermill timeout, Ctrl-C in a terminal, ``kill``) left its grid
    workers training on as orphans, taking the CPU from whatever ran next (seen 2026-11-25: four orphans at ~30%
    CPU each for 14 min). ``PR_SET_PDEATHSIG`` is the kernel's own mechanism for it; elsewhere this is a no-op.
    The kernel ties it to the *thread* that started the worker: call :func:`run_jobs` from a thread that outlives
    the jobs (the main thread, as the notebooks do).
    """
    import signal
    import sys

    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            pass
        if os.getppid() != (parent or os.getppid()):  # the parent died before the call above (reparented)
            os._exit(1)
    set_threads(threads)


def resolve_workers(workers: int | None, n_jobs: int) -> int:
    """How many processes run independent jobs side by side: ``workers``, or by default one per CPU core on
    the CPU (:func:`cpu_budget`) and 1 when a GPU is visible (two 7B trainings do not share one card); never more
    than the jobs.

    >>> resolve_workers(4, 3), resolve_workers(1, 6), resolve_workers(2, 0)
    (3, 1, 1)
    """
    if workers is None:
        import torch

        workers = 1 if torch.cuda.is_available() else cpu_budget()
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
                                   initializer=_worker_init, initargs=(threads, os.getpid()))
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


@contextmanager
def build_lock(path: str | os.PathLike, timeout: float = 1800):
    """Hold an inter-process lock for building the cached artifact ``path`` (a file ``.<name>.lock`` beside it):
    processes that need the same cache entry at once -- two pytest-xdist workers, two notebooks -- build it once;
    the others wait and then find it built. Check for the artifact again inside the block.

    >>> import tempfile; d = Path(tempfile.mkdtemp()) / "model"
    >>> with build_lock(d):
    ...     d.mkdir()
    >>> d.is_dir(), (d.parent / ".model.lock").exists()
    (True, True)
    """
    from filelock import FileLock, Timeout  # a dependency (bfcl-eval's data loaders use it too)

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.parent / f".{path.name}.lock"
    try:
        lock_ctx = FileLock(str(lock), timeout=timeout)
        lock_ctx.acquire()
    except Timeout:
        raise ConfigError(f"another process has been building {path} for over {timeout:.0f} s (lock {lock}); "
                          "wait for it, or delete the lock file if no such process is running") from None
    try:
        yield
    finally:
        lock_ctx.release()


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
    info = {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "cpu_budget": cpu_budget()}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def provenance(**extra) -> dict:
    """Package versions (bfcl-eval included), git SHA (and ``git_sha_at_start`` where HEAD or the clean/dirty state of
    tracked files changed since this process imported the library -- a commit during a long run; an edit to an
    untracked file, or a further edit to an already dirty tree, does not show; a worker process records its own
    import), device and a timestamp; ``extra`` is merged in."""
    pkgs = {}
    for name in PACKAGES:
        try:
            pkgs[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pkgs[name] = None
    sha = git_sha()
    # a long run whose checkout moved on while it ran (a commit, an edit) says which code it started from
    started = {} if _GIT_SHA_AT_START in (None, sha) else {"git_sha_at_start": _GIT_SHA_AT_START}
    return {"packages": pkgs, "git_sha": sha, **started, "device": device_info(),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **extra}


def stamp_run(out_dir, started: float, name: str = "run.json", **extra) -> dict:
    """Write ``out_dir/name``: :func:`provenance` with the wall-clock since ``started`` (a Unix time; the Makefile
    records it with ``date +%s`` when a target starts) -- a whole target's duration, every stage included.

    >>> import tempfile, time, json, pathlib
    >>> d = tempfile.mkdtemp(); s = stamp_run(d, time.time() - 90, target="demo")
    >>> 89 < s["provenance"]["wall_clock_s"] < 120, json.loads((pathlib.Path(d) / "run.json").read_text())["target"]
    (True, 'demo')
    """
    out = {**extra, "provenance": provenance(wall_clock_s=round(time.time() - float(started), 1),
                                             started_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ",
                                                                       time.gmtime(float(started))))}
    atomic_write_json(Path(out_dir) / name, out)
    return out


# ---------------------------------------------------------------- fingerprints (see the module docstring)

FINGERPRINT_FILE = "fingerprint.json"
_WHOLE = 2 * 2**20  # files up to this size are hashed whole; larger ones by size + first and last MiB


def _jsonable(obj):
    """``json.dumps`` fallback: a dataclass as the dict of its fields (not deep-copied: fast on big task lists);
    an object with Python's default ``str`` (which holds a memory address) as its type and ``name``; anything
    else as ``str``."""
    import dataclasses

    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    if type(obj).__str__ is object.__str__ and type(obj).__repr__ is object.__repr__:
        return {"type": f"{type(obj).__module__}.{type(obj).__qualname__}", "name": getattr(obj, "name", None)}
    return str(obj)


def fingerprint(obj) -> str:
    """sha256 of ``obj`` as canonical JSON (sorted keys, no spaces; tuples as lists, dataclasses as their fields,
    other values via ``str``), first 16 hex digits.

    >>> fingerprint({"a": 1})
    '015abd7f5cc57a2d'
    """
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=_jsonable)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def artifact_card(config: dict, inputs: dict | None = None) -> dict:
    """``{"fingerprint", "config", "inputs"}`` of an artifact: ``inputs`` maps a name to the input's fingerprint
    (:func:`input_fingerprint`). ``config`` is stored as canonical JSON, so a card read back from disk compares
    equal to a fresh one."""
    config = json.loads(json.dumps(config, default=_jsonable))
    inputs = {k: str(v) for k, v in sorted((inputs or {}).items())}
    return {"fingerprint": fingerprint({"config": config, "inputs": inputs}), "config": config, "inputs": inputs}


def read_fingerprint(path: str | os.PathLike) -> dict | None:
    """The ``fingerprint.json`` card of a directory, or ``None`` (no file, or a torn / foreign one)."""
    f = Path(path) / FINGERPRINT_FILE
    try:
        card = json.loads(f.read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return card if isinstance(card, dict) and "fingerprint" in card else None


def write_fingerprint(path: str | os.PathLike, card: dict) -> None:
    atomic_write_json(Path(path) / FINGERPRINT_FILE, card)


def stamp_checkpoint(path: str | os.PathLike, card: dict) -> None:
    """Record a checkpoint's identity: the run's card plus ``"output"``, the content hash of the weights it holds.
    Whatever starts from it or evaluates it keys on ``output`` (:func:`input_fingerprint`), so a checkpoint
    retrained in place under the same recipe — after a code change, on another machine — is a new input."""
    write_fingerprint(path, {**card, "output": content_fingerprint(path)})


def content_fingerprint(path: str | os.PathLike) -> str:
    """Content hash of a directory's top-level files (or of one file): names, sizes and bytes; a file over
    2 MiB contributes its size and its first and last MiB only. That keeps a 7B checkpoint at milliseconds; the
    price is that two such files of one size that differ only in their middle collide. Our own checkpoints carry
    a run fingerprint instead, so this applies to models made elsewhere (``toy``, a downloaded model)."""
    path = Path(path)
    files = [path] if path.is_file() else sorted(
        f for f in path.iterdir() if f.is_file() and not f.name.startswith(".") and f.name != FINGERPRINT_FILE)
    h = hashlib.sha256()
    for f in files:
        size = f.stat().st_size
        h.update(f"{f.name}\0{size}\0".encode())
        with open(f, "rb") as fh:
            if size <= _WHOLE:
                h.update(fh.read())
            else:
                h.update(fh.read(_WHOLE // 2))
                fh.seek(-_WHOLE // 2, os.SEEK_END)
                h.update(fh.read())
    return h.hexdigest()[:16]


def input_fingerprint(spec: str | os.PathLike) -> str:
    """How an artifact records one input (a model spec, a checkpoint or a data directory): a directory's recorded
    content hash (``"output"`` in its ``fingerprint.json``), else its recorded run fingerprint, else
    :func:`content_fingerprint` of its files; ``toy`` / ``smollm2`` are their cached directories; anything that is
    not a directory here (``oracle``, ``openai:NAME``, a hub id) is known by its name."""
    s = str(spec)
    from .models import MODEL_SPECS

    if s in MODEL_SPECS:
        path = Path(MODEL_SPECS[s]())
    else:
        path = Path(s).expanduser()
        if not path.exists() and not path.is_absolute():
            path = REPO_ROOT / path  # relative paths also resolve from the repo root, as model paths do
    if not path.is_dir():
        return fingerprint({"name": s})
    card = read_fingerprint(path)
    if card is None:
        return content_fingerprint(path)
    return str(card.get("output") or card["fingerprint"])


def card_changes(old: dict | None, new: dict) -> list[str]:
    """What differs between two cards: ``config.KEY`` (one level into nested dicts) and ``inputs.NAME``."""
    if old is None:
        return ["no fingerprint.json (a run from before fingerprints, or files not written by this tool)"]
    out = []
    oc, nc = old.get("config") or {}, new.get("config") or {}
    for k in sorted(set(oc) | set(nc)):
        a, b = oc.get(k), nc.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"config.{k}.{j}" for j in sorted(set(a) | set(b)) if a.get(j) != b.get(j)]
        else:
            out.append(f"config.{k}")
    oi, ni = old.get("inputs") or {}, new.get("inputs") or {}
    out += [f"inputs.{k}" for k in sorted(set(oi) | set(ni)) if oi.get(k) != ni.get(k)]
    return out or ["fingerprint"]


def claim_dir(path: str | os.PathLike, card: dict, *, replace: bool = False, what: str = "config",
              hint: str = "pass another output directory") -> bool:
    """Make ``path`` the home of the artifact ``card``; ``True`` when it already is (resume or reuse its files).

    A missing or empty directory is created and stamped with ``card``. A directory holding another fingerprint
    (or files without one) stops with a one-line :class:`ConfigError` naming what changed, and nothing is
    touched; with ``replace=True`` (a grid re-running its own stale cell) it is deleted and started afresh.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{path} is a file; {hint}")
    old = read_fingerprint(path) if path.exists() else None
    if old is not None and old["fingerprint"] == card["fingerprint"]:
        return True
    if path.exists() and any(path.iterdir()):
        if not replace:
            changes = ", ".join(card_changes(old, card))
            if len(changes) > 300:
                changes = changes[:300] + "..."
            raise ConfigError(f"{path} holds a run with another {what} (changed: {changes}); {hint}, "
                              "or delete it to start over (nothing was overwritten)")
        shutil.rmtree(path)
    path.mkdir(parents=True, exist_ok=True)
    write_fingerprint(path, card)
    return False


_GIT_SHA_AT_START = git_sha()  # this process's code, as the checkout was when parl_mt_lib.runtime was imported
