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
    pooled = compare_methods(methods, (0,), benches, tmp_path / "pooled", max_new_tokens=4, progress=False)
    assert starts == [(str(toy_path), 4)] and closes == [str(toy_path)]  # 4 cells, one start, closed once
    assert pool._pool is None

    monkeypatch.setattr(pool, "pooled", lambda: __import__("contextlib").nullcontext())
    starts.clear()
    alone = compare_methods(methods, (0,), benches, tmp_path / "alone", max_new_tokens=4, progress=False)
    assert len(starts) == 4

    def verdicts(res):
        return {(r["method"], r["benchmark"]): [json.loads(x)["valid"] for x in
                                                open(f"{r['results_dir']}/entries.jsonl")] for r in res["runs"]}
    assert verdicts(pooled) == verdicts(alone)


def test_an_engine_whose_evaluation_failed_is_closed_not_pooled():
    import pytest

    import parl_mt_lib.engine_pool as pool

    class Engine:
        def __init__(self):
            self.closed = False

        def close(self):
            self.closed = True

    with pool.pooled():
        e = pool.acquire("k", Engine)
        pool.release("k", e, keep=False)
        assert e.closed and pool.acquire("k", Engine) is not e
        other = pool.acquire("other", Engine)
        pool.release("other", other)
    assert other.closed
    with pytest.raises(RuntimeError), pool.pooled():
        e2 = pool.acquire("k", Engine)
        pool.release("k", e2)
        raise RuntimeError("boom")
    assert e2.closed and pool._pool is None
