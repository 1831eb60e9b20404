"""One started evaluation engine kept open between :func:`~parl_mt_lib.evaluate.evaluate` calls that would start
the same engine again.

Notebook 06 evaluates each (method, seed) on several benchmarks, one ``evaluate`` call each, and every call starts
its own engine: on 2 CPU cores a vLLM server start costs ~20-45 s, against ~30-90 s of actual generation per cell
for SmolLM2-135M, so most of a six-way comparison was start-ups. Inside :func:`pooled` the engine an ``evaluate``
call started is handed back instead of closed and reused by the next call with the same key -- the policy path and
the fingerprint of its contents, the rollout backend and every generation setting (style, endpoint,
``max_new_tokens``, temperature); the seed is
set per call (``reseed``) and a vLLM engine's prefix cache is reset on reuse, so a reused engine answers as a fresh
one would. One engine at a time: a call with another key closes the pooled one first. An engine whose call raised
is closed, never pooled; one that died while pooled is replaced. The pool is per process (06's ``workers > 1`` runs
cells in spawned processes: each starts its own engines, as before). Outside :func:`pooled` nothing changes (each
call starts and closes its own). Written by hand: vLLM has no notion of "the same server for the next job"; this is
~40 lines of bookkeeping around it.

Example:
    >>> class Engine:
    ...     started = 0
    ...     def __init__(self): Engine.started += 1; self.closed = False
    ...     def close(self): self.closed = True
    >>> with pooled():
    ...     a = acquire("k", Engine); release("k", a)
    ...     b = acquire("k", Engine); release("k", b)
    >>> a is b, Engine.started, a.closed
    (True, 1, True)
"""
from __future__ import annotations

from contextlib import contextmanager

_pool: dict | None = None  # while pooled() is open: {"key": ..., "engine": ...} (or empty)


def _close(engine) -> None:
    if engine is not None and hasattr(engine, "close"):
        engine.close()


@contextmanager
def pooled():
    """Pool engines for the calls inside (nested uses share the outermost pool); the pooled engine closes on exit."""
    global _pool
    if _pool is not None:
        yield
        return
    _pool = {}
    try:
        yield
    finally:
        p, _pool = _pool, None
        _close(p.get("engine"))


def acquire(key, make):
    """The pooled engine for ``key`` (prefix cache reset), else ``make()`` -- after closing a pooled engine of
    another key."""
    if _pool is None:
        return make()
    if _pool.get("key") == key and _pool.get("engine") is not None:
        engine = _pool["engine"]
        try:
            if hasattr(engine, "reset_prefix_cache"):
                engine.reset_prefix_cache()
            return engine
        except Exception:  # noqa: BLE001 -- an engine that died while pooled is replaced, not handed out
            pass
    try:
        _close(_pool.get("engine"))
    except Exception:  # noqa: BLE001 -- a dead engine may fail to close; a new one starts regardless
        pass
    _pool.clear()
    return make()


def release(key, engine, keep: bool = True) -> None:
    """Hand ``engine`` back: pooled under ``key`` while :func:`pooled` is open and ``keep`` (its call finished),
    else closed."""
    if _pool is None or not keep:
        if _pool is not None and _pool.get("engine") is engine:
            _pool.clear()
        _close(engine)
        return
    if _pool.get("engine") is not engine:
        _close(_pool.get("engine"))
    _pool.update(key=key, engine=engine)
