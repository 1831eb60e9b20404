"""The RL loop: token/mask round-trips in both contexts, a weight-free loop test, KL before the first update,
sampler log-probs as the ratio's ``old`` and the logged gap, completion-only logits on the toy (LoRA and full),
resume after a kill, determinism, bad recipes, train/test hygiene."""
import json
import math
import re

import pytest
import torch
from helpers import ExplodingBackend

from parl_mt_lib.bfcl import entry_by_id
from parl_mt_lib.context import make_context, render_prompt
from parl_mt_lib.grpo import completion_logps, grpo_loss, pad_batch
from parl_mt_lib.policies import HFPolicy
from parl_mt_lib.rl import iteration_batch, load_rl_recipe, rl_tasks, train_rl
from parl_mt_lib.rl_samples import score_episodes, step_samples
from parl_mt_lib.rl_update import Reference, load_policy_model, update
from parl_mt_lib.rollout import Episode, Generation, StepRequest, run_episodes
from parl_mt_lib.runtime import ConfigError

pytestmark = pytest.mark.model


@pytest.fixture(scope="module")
def sft_init(pag_dir, tmp_path_factory):
    """A toy briefly SFT'd on the plain view: its samples vary in format, so advantages are not all zero."""
    from parl_mt_lib.sft import load_recipe, train_sft

    r = load_recipe("recipes/toy/sft.yaml", {"data": str(pag_dir), "view": "plain", "max_steps": 30,
                                             "per_device_train_batch_size": 4, "save_steps": 1000})
    return train_sft(r, tmp_path_factory.mktemp("sft") / "plain")["final_dir"]


def _recipe(pag_dir, toy_path, method="mt_grpo", **kw):
    base = "recipes/toy/pag_rl.yaml" if method == "pag_rl" else "recipes/toy/mt_grpo.yaml"
    return load_rl_recipe(base, {"data": str(pag_dir), "init": str(toy_path), "iterations": 4, "group_size": 3,
                                 "tasks_per_iteration": 2, "max_new_tokens": 12, "save_every": 2, "eval_tasks": 2,
                                 "max_steps_per_turn": 2, **kw})


@pytest.mark.parametrize("mode,temperature", [("progress", 1.0), ("full_history", 0.7)])
def test_token_and_mask_round_trip_across_turns(toy, mode, temperature):
    """Every step sample: prompt tokens are exactly the rendered context, the mask covers exactly the tokens the
    model sampled (never system / user / tool tokens, never an earlier step's output), and the sampled
    log-probs equal the model's log-probs of those tokens recomputed on the training path."""
    model, tok = toy
    entry = entry_by_id("multi_turn_base_0")  # 4 turns
    ctx = make_context(mode, tool_docs="minimal")
    seen = []
    pol = HFPolicy(model, tok, max_new_tokens=10, temperature=temperature, micro_batch_size=8, keep_tokens=True)
    orig = pol.generate
    pol.generate = lambda reqs: [seen.append(r.messages) or g for r, g in zip(reqs, orig(reqs))]
    torch.manual_seed(0)
    (ep,) = run_episodes(pol, [entry], ctx, max_steps=2, progress=False)
    assert len({s.turn for s in ep.steps}) >= 3
    for step, msgs in zip(ep.steps, seen):
        assert tok.decode(step.prompt_ids) == render_prompt(tok, msgs)
        text = tok.decode([t for t in step.completion_ids if t != tok.eos_token_id])
        assert text == step.output
        ids, attn, comp = pad_batch([{"prompt_ids": step.prompt_ids, "completion_ids": step.completion_ids}],
                                    tok.pad_token_id)
        masked = ids[0][comp[0].bool()].tolist()
        assert masked == step.completion_ids
        unmasked = tok.decode(ids[0][~comp[0].bool()].tolist())
        for m in msgs:  # system, user, tool (and, in full history, earlier assistant) text: all unmasked
            assert m["content"] in unmasked
        with torch.no_grad():
            lp = completion_logps(model, ids, attn, comp, temperature)[0][comp[0].bool()]
        assert torch.allclose(lp, torch.tensor(step.logprobs), atol=1e-4)
    if mode == "full_history":  # the history grows: earlier outputs sit in later prompts, without loss
        assert len(ep.steps[-1].prompt_ids) > len(ep.steps[0].prompt_ids)


def _fake_gen(text):
    return Generation(text, 3, 2, prompt_ids=[1, 2, 3], completion_ids=[4, 5], logprobs=[-0.1, -0.2])


def test_mock_policy_loop_advantages(pag_dir, toy_path):
    """Weight-free: a scripted policy that solves every other episode of a task; advantages follow the reward,
    one per episode (PAG-RL), and a group whose rewards do not vary gets 0 (PAG-RL and MT-GRPO)."""
    from parl_mt_lib.calls import render_calls
    from parl_mt_lib.policies import gold_step

    train, _ = rl_tasks(_recipe(pag_dir, toy_path))
    task = train[0]

    def answer(req):
        chunk, _ = gold_step(req.episode)
        solver = req.episode.env is not None and req.episode.solver
        return _fake_gen("<summary>s</summary><plan>p</plan>" + (render_calls(chunk) if chunk and solver else ""))

    for method in ("pag_rl", "mt_grpo"):
        recipe = _recipe(pag_dir, toy_path, method=method)
        eps = [Episode(task) for _ in range(4)]
        for k, ep in enumerate(eps):
            ep.solver = k % 2 == 0
        ctx = make_context("progress" if method == "pag_rl" else "full_history", tool_docs="minimal")
        while not all(e.done for e in eps):
            for e in [e for e in eps if not e.done]:
                e.record(answer(StepRequest(ctx.messages(e), None, e)), 4)
        scored = score_episodes(eps, recipe)
        assert [s["success"] for s in scored] == [True, False, True, False]
        samples = step_samples(eps, scored, recipe, group_of=lambda e: e.entry.id)
        assert len(samples) == sum(len(e.steps) for e in eps)
        if method == "pag_rl":  # episode advantage broadcast to every step
            assert all(len({s["advantage"] for s in samples if s["episode"] == k}) == 1 for k in range(4))
        assert all(s["advantage"] > 0 for s in samples if s["episode"] % 2 == 0)
        assert all(s["advantage"] < 0 for s in samples if s["episode"] % 2 == 1)
        same = step_samples(eps[::2], scored[::2], recipe, group_of=lambda e: e.entry.id)
        assert all(s["advantage"] == 0 for s in same)  # both solved: zero variance, zero advantage


@pytest.mark.parametrize("lora", [False, True])
def test_kl_is_zero_before_the_first_update(pag_dir, toy_path, toy, lora):
    recipe = _recipe(pag_dir, toy_path, beta=0.1, lora=lora, lora_r=4)
    model, tok = load_policy_model(recipe)
    ref = Reference(model, recipe)
    sample = {"prompt_ids": tok("hello there").input_ids, "completion_ids": tok(" ls()").input_ids,
              "advantage": 1.0}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    first = update(model, opt, [sample], recipe, tok.pad_token_id, ref)
    assert first["kl"] == pytest.approx(0.0, abs=1e-7) and not first["skipped"]
    second = update(model, opt, [sample], recipe, tok.pad_token_id, ref)
    assert second["kl"] > 0


def _alone_logps(model, sample, temperature):
    """Log-probs of the completion tokens from one unpadded forward pass, computed here by hand."""
    ids = torch.tensor([sample["prompt_ids"] + sample["completion_ids"]])
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float() / temperature, -1)
    n = len(sample["prompt_ids"])
    return [float(lp[n - 1 + k, t]) for k, t in enumerate(sample["completion_ids"])]


def test_ratio_uses_the_sampler_logprobs(pag_dir, toy_path):
    """Sampler log-probs are the behaviour policy (TRL's vLLM importance-sampling correction): the clipped ratio's
    ``old`` are the trainer's own log-probs before the step, and a truncated weight ``min(exp(old - sampler), 3)``
    multiplies the policy term. Sampler log-probs 1 nat below the trainer's weigh every token e (loss -e, nothing
    clipped), 2 nats below hit the cap (loss -3); exact ones or none (weight 1) leave the loss at -A. The update
    logs the |sampler - trainer| gap and the weights."""
    recipe = _recipe(pag_dir, toy_path, clip_eps=0.2)
    model, tok = load_policy_model(recipe)
    base = {"prompt_ids": tok("hello there").input_ids, "completion_ids": tok(" ls(a=1)").input_ids,
            "advantage": 1.0}
    exact = _alone_logps(model, base, recipe.temperature)
    rows = {}
    for name, lp in (("none", None), ("exact", exact), ("shifted", [x - 1.0 for x in exact]),
                     ("far", [x - 2.0 for x in exact])):
        model, tok = load_policy_model(recipe)  # the same starting weights for every variant
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.0)
        rows[name] = update(model, opt, [{**base, "logprobs": lp}], recipe, tok.pad_token_id, None)
    assert all(r["clip_frac"] == 0.0 for r in rows.values())
    assert rows["exact"]["loss"] == pytest.approx(-1.0, abs=1e-4) and rows["none"]["loss"] == pytest.approx(-1.0)
    assert rows["shifted"]["loss"] == pytest.approx(-math.e, abs=1e-4)
    assert rows["far"]["loss"] == pytest.approx(-3.0, abs=1e-4)  # e^2 truncated at the cap
    assert rows["far"]["is_weight_max"] == pytest.approx(3.0) and rows["none"]["is_weight_mean"] is None
    assert rows["exact"]["logprob_gap_mean"] < 1e-5 and rows["none"]["logprob_gap_mean"] is None
    assert rows["shifted"]["logprob_gap_mean"] == pytest.approx(1.0, abs=1e-4)
    assert rows["shifted"]["logprob_gap_max"] == pytest.approx(1.0, abs=1e-4)
    recipe = _recipe(pag_dir, toy_path, updates_per_iteration=2)  # without sampler log-probs the fallback ``old``
    model, tok = load_policy_model(recipe)                         # is fixed before the first step: the second
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)  # step sees ratio > 1
    assert update(model, opt, [{**base, "logprobs": None}], recipe, tok.pad_token_id, None)["loss"] < -1.01


def test_one_toy_iteration_logs_a_small_logprob_gap(pag_dir, toy_path, tmp_path):
    """HF sampling at the recipe temperature and the trainer agree on the toy: mean gap < 1e-4, in the
    iteration row and in the metrics' cost summary."""
    m = train_rl(_recipe(pag_dir, toy_path, iterations=1), tmp_path / "run", progress=False)
    (row,) = [json.loads(x) for x in (tmp_path / "run" / "iterations.jsonl").read_text().splitlines()]
    assert row["n_samples"] > 0
    assert 0 <= row["logprob_gap_mean"] < 1e-4 and row["logprob_gap_max"] >= row["logprob_gap_mean"]
    assert m["cost"]["logprob_gap_mean"] == row["logprob_gap_mean"]
    assert m["cost"]["logprob_gap_max"] == row["logprob_gap_max"]
    recipe = _recipe(pag_dir, toy_path, iterations=1)  # the row names the tasks it drew (the probe reads them)
    assert row["task_ids"] == [t.id for t in iteration_batch(recipe, rl_tasks(recipe)[0], 0)]


@pytest.mark.parametrize("lora", [False, True])
def test_completion_logits_update_equals_full_logits_update(pag_dir, toy_path, lora):
    """On the toy (full fine-tuning and LoRA): the update with logits at completion positions only gives the
    loss and the gradients of the full-logits computation."""
    from parl_mt_lib.bench import full_logits_token_logps

    recipe = _recipe(pag_dir, toy_path, lora=lora, lora_r=4)
    model, tok = load_policy_model(recipe)
    samples = [{"prompt_ids": tok(p).input_ids, "completion_ids": tok(c).input_ids, "advantage": a}
               for p, c, a in (("hello there", " ls(a=1)", 1.0), ("list the files please", " ls()", -1.0),
                               ("cd", " cd(folder='x')<|im_end|>", 0.5))]
    ids, attn, comp = pad_batch(samples, tok.pad_token_id)
    adv = torch.tensor([s["advantage"] for s in samples])
    out = []
    for fn in (full_logits_token_logps, completion_logps):
        model.zero_grad()
        lp = fn(model, ids, attn, comp, recipe.temperature)
        loss, _ = grpo_loss(lp, lp.detach() + 0.05, None, adv, comp, int(comp.sum()))
        loss.backward()
        out.append((float(loss), {k: p.grad.clone() for k, p in model.named_parameters() if p.requires_grad}))
    (loss_full, g_full), (loss_new, g_new) = out
    assert loss_new == pytest.approx(loss_full, abs=1e-6)
    assert g_full and all(torch.allclose(g_new[k], g_full[k], atol=1e-6, rtol=1e-4) for k in g_full)


def test_update_is_independent_of_how_samples_are_grouped(pag_dir, toy_path):
    """The update groups step samples into micro-batches by length (less padding): another grouping -- one sample
    per micro-batch, all in one, pairs of shuffled input -- gives the same loss, gradients and logged gap; and the
    micro-batches really are length-ordered."""
    from parl_mt_lib.rl_update import micro_batches, trainable_parameters

    rows = [("hello there, please list everything", " ls(a=1)", 1.0), ("ls", " ls()", -1.0),
            ("cd into the folder named x now", " cd(folder='x')<|im_end|>", 0.5), ("mk", " mkdir(dir_name='d')", -0.5),
            ("what is the working directory", " pwd()<|im_end|>", 0.25)]
    out = []
    for mbs, order in ((1, (0, 1, 2, 3, 4)), (5, (0, 1, 2, 3, 4)), (2, (4, 2, 0, 3, 1))):
        recipe = _recipe(pag_dir, toy_path, micro_batch_size=mbs, beta=0.0, max_grad_norm=1e9)
        model, tok = load_policy_model(recipe)
        samples = []
        for i in order:
            p, c, a = rows[i]
            comp = tok(c).input_ids
            samples.append({"prompt_ids": tok(p).input_ids, "completion_ids": comp, "advantage": a,
                            "logprobs": [-1.0 - 0.1 * k for k in range(len(comp))]})
        lens = [len(s["prompt_ids"]) + len(s["completion_ids"]) for mb in micro_batches(samples, 2) for s in mb]
        assert lens == sorted(lens)
        opt = torch.optim.SGD(trainable_parameters(model), lr=0.0)
        row = update(model, opt, samples, recipe, tok.pad_token_id, None)
        out.append((row, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (a, ga) = out[0]
    for b, gb in out[1:]:
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6)
        assert a["grad_norm"] == pytest.approx(b["grad_norm"], rel=1e-5)
        assert a["logprob_gap_mean"] == pytest.approx(b["logprob_gap_mean"], rel=1e-6)
        assert ga and all(torch.allclose(ga[k], gb[k], atol=1e-7, rtol=1e-5) for k in ga)


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU bf16 means bf16 weights")
@pytest.mark.parametrize("bf16", [False, True])
def test_bf16_recipe_autocasts_the_update_on_cpu_with_fp32_weights(pag_dir, toy_path, bf16):
    """``bf16: true`` on the CPU: fp32 weights (the trainer's copy and what the engine gets), every forward of the
    update under bf16 autocast (a Linear's output is bf16 there), the card says so; ``false`` stays fp32 throughout."""
    from parl_mt_lib.rl import rl_fingerprint
    from parl_mt_lib.rl_update import trainable_parameters

    recipe = _recipe(pag_dir, toy_path, bf16=bf16, beta=0.0)
    model, tok = load_policy_model(recipe)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    seen = []
    lin = next(m for m in model.modules() if isinstance(m, torch.nn.Linear))
    hook = lin.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    comp = tok(" ls()").input_ids
    sample = {"prompt_ids": tok("list the files").input_ids, "completion_ids": comp, "advantage": 1.0,
              "logprobs": [-1.0] * len(comp)}
    row = update(model, torch.optim.SGD(trainable_parameters(model), lr=1e-3), [sample], recipe, tok.pad_token_id,
                 None)
    hook.remove()
    assert not row["skipped"] and seen and set(seen) == {torch.bfloat16 if bf16 else torch.float32}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # an fp32 run's card has no precision key: the cards of the runs made before the key stand
    assert rl_fingerprint(recipe)["config"].get("precision") == ("fp32+bf16-autocast" if bf16 else None)


def test_resume_after_kill_reaches_the_same_final_step(pag_dir, sft_init, tmp_path):
    recipe = _recipe(pag_dir, sft_init)
    ref = train_rl(recipe, tmp_path / "ref", progress=False)
    assert train_rl(recipe, tmp_path / "run", progress=False, stop_after=3) == {"stopped_at": 3}
    assert (tmp_path / "run" / "checkpoint-2").exists() and not (tmp_path / "run" / "final").exists()
    again = train_rl(recipe, tmp_path / "run", progress=False)
    rows = lambda d: [json.loads(x) for x in (d / "iterations.jsonl").read_text().splitlines()]  # noqa: E731
    a, b = rows(tmp_path / "ref"), rows(tmp_path / "run")
    assert [r["iteration"] for r in b] == [0, 1, 2, 3] and again["iterations"] == ref["iterations"] == 4
    assert [r["reward_mean"] for r in a] == pytest.approx([r["reward_mean"] for r in b])
    assert any(not r["skipped"] for r in a)  # the run really updated the weights
    from transformers import AutoModelForCausalLM

    sa = AutoModelForCausalLM.from_pretrained(ref["final_dir"]).state_dict()
    sb = AutoModelForCausalLM.from_pretrained(again["final_dir"]).state_dict()
    assert all(torch.allclose(sa[k], sb[k], atol=1e-5) for k in sa)
    for key in ("prompt_tokens_per_step", "generated_tokens_per_step", "rollout_s", "peak_mem_mb"):
        assert key in a[0]
    assert set(ref) >= {"reward_first20", "reward_last20", "heldout_start", "heldout_final", "cost", "provenance"}


def test_rl_is_deterministic(pag_dir, sft_init, tmp_path):
    """Two runs of one tiny RL training give exactly the same iteration metrics (rewards, losses, KL, clipping,
    gradient norms, token counts, log-prob gaps), wall-clock and memory aside."""
    recipe = _recipe(pag_dir, sft_init, iterations=2, task_pool=2, save_every=10)
    runs = []
    for name in ("a", "b"):
        m = train_rl(recipe, tmp_path / name, progress=False)
        rows = [json.loads(x) for x in (tmp_path / name / "iterations.jsonl").read_text().splitlines()]
        runs.append(([{k: v for k, v in r.items() if k not in ("rollout_s", "update_s", "sync_s", "peak_mem_mb")}
                      for r in rows], {k: m[k] for k in ("reward_first20", "reward_last20", "heldout_start",
                                                         "heldout_final")}))
    assert runs[0] == runs[1]
    rows = runs[0][0]
    assert len(rows) == 2 and any(not r["skipped"] for r in rows)  # the weights really moved in between
    assert all(r["logprob_gap_mean"] < 1e-4 for r in rows)


def test_bad_rl_recipe_stops_before_loading(pag_dir, toy_path, tmp_path):
    with pytest.raises(ConfigError, match="unknown recipe key"):
        _recipe(pag_dir, toy_path, iteratons=3)
    with pytest.raises(ConfigError, match="method must be"):
        load_rl_recipe("recipes/toy/pag_rl.yaml", {"method": "ppo"})
    with pytest.raises(ConfigError, match="unknown reward"):
        _recipe(pag_dir, toy_path, rewards={"speed": 1.0})
    with pytest.raises(ConfigError, match="group_size"):
        _recipe(pag_dir, toy_path, group_size=1)
    with pytest.raises(ConfigError, match="02_sft"):
        train_rl(_recipe(pag_dir, "./no/such/model"), tmp_path / "a")
    with pytest.raises(ConfigError, match="dataset .* not found"):
        train_rl(_recipe(tmp_path / "nothing", toy_path), tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    recipe = _recipe(pag_dir, toy_path, iterations=1)
    train_rl(recipe, tmp_path / "c", progress=False)
    with pytest.raises(ConfigError, match="another recipe"):
        train_rl(_recipe(pag_dir, toy_path, iterations=2, learning_rate=1.0), tmp_path / "c")
    assert (tmp_path / "c" / "final").exists()


def test_rl_tasks_never_touch_evaluation_entries(pag_dir, toy_path):
    from parl_mt_lib.splits import overlap_report

    train, held = rl_tasks(_recipe(pag_dir, toy_path))
    assert not {t.id for t in train} & {t.id for t in held}
    assert overlap_report(train)["n_overlapping"] == 0


@pytest.mark.parametrize("override,msg", [
    ({"top_p": 0.8}, "top_p 0.8 is not modelled"),
    ({"temperature": 0.0}, "temperature must be > 0"),
    ({"lora": True, "lora_dropout": 0.05}, "lora_dropout 0.05"),
    ({"rollout_backend": "oracle"}, "rollout_backend must be one of ['hf', 'vllm']"),
    ({"rollout_backend": "nope"}, "rollout_backend must be one of"),
    ({"rollout_backend": "vllm", "lora_sync": "merge"}, "lora_sync must be one of adapter, merged"),
    ({"rollout_backend": "vllm", "engine_dtype": "int8"}, "engine_dtype must be"),
    ({"engine_dtype": "bfloat16"}, "engine_dtype is a vLLM engine setting"),
])
def test_recipe_refuses_sampling_the_trainer_does_not_model(override, msg):
    from parl_mt_lib.runtime import ConfigError

    with pytest.raises(ConfigError, match=re.escape(msg)):
        load_rl_recipe("recipes/toy/pag_rl.yaml", override)


def test_a_backend_the_loop_built_is_closed_when_the_loop_fails(pag_dir, toy_path, tmp_path, monkeypatch):
    """Defect (issue 12 review): ``train_rl`` built a vLLM engine from the recipe and never closed it (an engine
    process per run, left running until interpreter exit, through the final merge and held-out evaluation). One it
    was given stays open: the caller owns it."""
    from parl_mt_lib import backends

    built = []
    monkeypatch.setitem(backends.BACKENDS, "exploding", lambda **kw: built.append(ExplodingBackend()) or built[-1])
    monkeypatch.setattr(backends, "RECIPE_BACKENDS", backends.RECIPE_BACKENDS | {"exploding"})
    recipe = _recipe(pag_dir, toy_path, iterations=1, eval_tasks=0, rollout_backend="exploding")
    with pytest.raises(RuntimeError, match="engine crashed"):
        train_rl(recipe, tmp_path / "run", progress=False)
    assert len(built) == 1 and built[0].closed == 1
    given = ExplodingBackend()
    with pytest.raises(RuntimeError, match="engine crashed"):
        train_rl(recipe, tmp_path / "run2", progress=False, backend=given)
    assert given.closed == 0


def test_heldout_play_goes_through_the_recipe_backend_greedy(pag_dir, toy_path, tmp_path, monkeypatch):
    """Defect (issue 13): with ``rollout_backend: vllm`` the start-of-run and final held-out evaluations played with
    HF ``generate`` whatever the recipe's backend (a SmolLM2 PAG-RL probe spent 14 min there before its first
    iteration). Now they go through the run's own engine, greedy, while it is open; rollouts keep the recipe's
    temperature."""
    from parl_mt_lib import backends

    seen, closed = [], []

    class Recording(HFPolicy):  # an HF policy registered as another engine: it records each call's temperature
        def generate(self, requests):
            seen.append((self.temperature, bool(closed)))
            return super().generate(requests)

        def close(self):
            closed.append(1)

    monkeypatch.setitem(backends.BACKENDS, "recording", lambda *, model, tokenizer, **kw: Recording(model, tokenizer,
                                                                                                  **kw))
    monkeypatch.setattr(backends, "RECIPE_BACKENDS", backends.RECIPE_BACKENDS | {"recording"})
    recipe = _recipe(pag_dir, toy_path, iterations=1, eval_tasks=2, rollout_backend="recording", temperature=1.0)
    m = train_rl(recipe, tmp_path / "run", progress=False)
    temps = [t for t, _ in seen]
    assert 0.0 in temps and 1.0 in temps          # held-out greedy and rollouts sampled, on the same engine
    assert temps[0] == 0.0 and temps[-1] == 0.0   # start-of-run and final held-out evaluations
    assert not any(after for _, after in seen) and closed == [1]  # all before the engine closed
    assert m["heldout_engine"] == "recording" and m["heldout_final"] is not None
