"""06's rollout_backend reaches every cell's evaluate and is part of the cells' fingerprints (an HF cell is not
reused for a vLLM comparison, nor the other way round)."""
import parl_mt_lib.evaluate as ev
from parl_mt_lib.compare import compare_methods


def test_backend_reaches_evaluate_and_the_fingerprint(pag_dir, tmp_path, toy_path, monkeypatch):
    seen = []
    real = ev.evaluate

    def spy(*a, rollout_backend="hf", **kw):
        seen.append(rollout_backend)
        return real(*a, **kw)  # played by HF here: the test is about the plumbing, not the engine

    monkeypatch.setattr(ev, "evaluate", spy)
    methods = {"m": {"policy": str(toy_path), "context": "progress", "seeded": False}}
    benches = {"synthetic": {"tasks": str(pag_dir), "limit": 1}}
    kw = dict(max_new_tokens=4, progress=False)
    compare_methods(methods, (0,), benches, tmp_path / "cmp", **kw)
    compare_methods(methods, (0,), benches, tmp_path / "cmp", rollout_backend="vllm", **kw)
    again = compare_methods(methods, (0,), benches, tmp_path / "cmp", rollout_backend="vllm", **kw)
    assert seen == ["hf", "vllm"]  # the vllm cell ran (not reused from hf), then was reused
    assert again["reused_cells"]


def test_one_engine_start_serves_a_methods_benchmarks_and_verdicts_do_not_change(pag_dir, tmp_path, toy_path,
                                                                                  monkeypatch):
    """06 pools the engine across a (method, seed)'s benchmarks (engine_pool): one start instead of one per cell,
    closed at the end, and every cell's verdicts equal those of a comparison that starts an engine per cell."""
    import json

    import parl_mt_lib.engine_pool as pool

    starts, closes = [], []
    real = ev.make_eval_policy

    def counting(policy, backend, **kw):
        pol = real(policy, backend, **kw)
        starts.append((str(policy), kw["max_new_tokens"]))
        pol.close = lambda: closes.append(str(policy))
        return pol

    monkeypatch.setattr(ev, "make_eval_policy", counting)
    methods = {"a": {"policy": str(toy_path), "context": "progress", "seeded": False},
               "b": {"policy": str(toy_path), "context": "full_history", "prompting": "cot", "seeded": False}}
    benches = {"syn": {"tasks": str(pag_dir), "limit": 2}, "bfcl": {"bfcl": "base", "limit": 1}}
    pooled = compare_methods(methods, (0,), benches, tmp_path / "pooled", max_new_tokens=12, progress=False)
    assert starts == [(str(toy_path), 12)] and closes == [str(toy_path)]  # 4 cells, one start, closed once
    assert pool._pool is None

    monkeypatch.setattr(pool, "pooled", lambda: __import__("contextlib").nullcontext())
    starts.clear()
    alone = compare_methods(methods, (0,), benches, tmp_path / "alone", max_new_tokens=12, progress=False)
    assert len(starts) == 4

    def played(res):  # everything an episode row says the policy did, not only the verdict
        keep = ("id", "valid", "turns", "completion_tokens", "prompt_tokens", "step_errors", "n_steps")
        return {(r["method"], r["benchmark"]): [{k: json.loads(x).get(k) for k in keep} for x in
                                                open(f"{r['results_dir']}/entries.jsonl")] for r in res["runs"]}
    assert played(pooled) == played(alone)


def test_the_pool_closes_what_it_does_not_hand_out():
    """Another key closes the pooled engine; an engine that died while pooled is replaced; leaving the pool (also
    by an exception) closes the pooled one."""
    import pytest

    import parl_mt_lib.engine_pool as pool

    class Engine:
        def __init__(self):
            self.closed, self.dead = False, False

        def close(self):
            self.closed = True

        def reset_prefix_cache(self):
            if self.dead:
                raise ConnectionError("engine gone")

    with pool.pooled():
        a = pool.acquire("k", Engine)
        pool.release("k", a)
        b = pool.acquire("other", Engine)  # another key: the pooled engine is closed first
        assert a.closed and b is not a
        pool.release("other", b)
        b.dead = True
        c = pool.acquire("other", Engine)  # same key, but the pooled engine died: a new one
        assert c is not b and b.closed
        pool.release("other", c)
    assert c.closed and pool._pool is None
    with pytest.raises(RuntimeError), pool.pooled():
        d = pool.acquire("k", Engine)
        pool.release("k", d)
        raise RuntimeError("boom")
    assert d.closed and pool._pool is None


def test_an_engine_whose_evaluation_failed_is_closed_not_pooled(pag_dir, tmp_path, toy_path, monkeypatch):
    """An evaluate() that raises inside the pool closes its engine; the next call starts a new one."""
    import pytest

    import parl_mt_lib.engine_pool as pool
    from parl_mt_lib.compare import bench_entries

    made = []
    real = ev.make_eval_policy

    def make(policy, backend, **kw):
        pol = real(policy, backend, **kw)
        pol.closed = False
        pol.close = lambda: setattr(pol, "closed", True)
        made.append(pol)
        return pol

    monkeypatch.setattr(ev, "make_eval_policy", make)
    entries = bench_entries({"tasks": str(pag_dir), "limit": 1})
    kw = dict(entries=entries, max_new_tokens=4, progress=False, tool_docs="minimal")
    with pool.pooled():
        monkeypatch.setattr("parl_mt_lib.rollout.run_episodes",
                            lambda *a, **k: (_ for _ in ()).throw(RuntimeError("engine died")))
        with pytest.raises(RuntimeError, match="engine died"):
            ev.evaluate(str(toy_path), results_dir=tmp_path / "a", **kw)
        assert made[0].closed and pool._pool == {}
        monkeypatch.undo()
        monkeypatch.setattr(ev, "make_eval_policy", make)
        ev.evaluate(str(toy_path), results_dir=tmp_path / "b", **kw)
        assert len(made) == 2 and not made[1].closed  # a new engine, pooled
    assert made[1].closed


def test_a_checkpoint_changed_on_disk_gets_a_new_engine(pag_dir, tmp_path, toy_path, monkeypatch):
    """The pool key holds the checkpoint's content fingerprint, not only its path: the same directory retrained
    between two evaluations is served by a new engine."""
    import shutil

    import parl_mt_lib.engine_pool as pool
    from parl_mt_lib.compare import bench_entries

    ckpt = tmp_path / "ckpt"
    shutil.copytree(toy_path, ckpt)
    starts = []
    real = ev.make_eval_policy
    monkeypatch.setattr(ev, "make_eval_policy", lambda *a, **k: starts.append(1) or real(*a, **k))
    kw = dict(entries=bench_entries({"tasks": str(pag_dir), "limit": 1}), max_new_tokens=4, progress=False,
              tool_docs="minimal")
    with pool.pooled():
        ev.evaluate(str(ckpt), results_dir=tmp_path / "a", **kw)
        ev.evaluate(str(ckpt), results_dir=tmp_path / "b", **kw)
        assert len(starts) == 1  # same contents: reused
        (ckpt / "generation_config.json").write_text((ckpt / "generation_config.json").read_text() + "\n")
        ev.evaluate(str(ckpt), results_dir=tmp_path / "c", **kw)
    assert len(starts) == 2
