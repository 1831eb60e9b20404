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
