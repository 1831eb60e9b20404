"""Scale-out: the RL update data-parallel under accelerate -- two CPU processes (gloo, accelerate's
``debug_launcher``), each with its own share of the step samples (unequal micro-batch counts), take exactly the step
one process takes on all of them: same gradients, loss, gradient norm and logged gap. The accelerate configs in
``recipes/accelerate/`` parse."""
import pytest
import torch

from parl_mt_lib.rl_recipe import load_rl_recipe

pytestmark = pytest.mark.model
RECIPE = {"micro_batch_size": 2, "beta": 0.0, "temperature": 0.7, "max_grad_norm": 1e9}


def _samples(tok):
    rows = [("hello there", " ls(a=1)", 1.0, True), ("list the files please", " ls()", -1.0, False),
            ("cd into x", " cd(folder='x')<|im_end|>", 0.5, True), ("make a dir", " mkdir(dir_name='d')", -0.5, True),
            ("what now", " pwd()<|im_end|>", 0.25, False)]
    out = []
    for p, c, a, with_lp in rows:
        comp = tok(c).input_ids
        out.append({"prompt_ids": tok(p).input_ids, "completion_ids": comp, "advantage": a,
                    "logprobs": [-1.0 - 0.1 * k for k in range(len(comp))] if with_lp else None})
    return out


def _step(samples, recipe):
    from parl_mt_lib.models import load_model
    from parl_mt_lib.rl_update import trainable_parameters, update
    from parl_mt_lib.toy_model import build_toy_model

    model, tok = load_model(str(build_toy_model()))
    opt = torch.optim.SGD(trainable_parameters(model), lr=0.0)
    row = update(model, opt, samples(tok), recipe, tok.pad_token_id, None)
    return row, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _rank(out_dir):
    from accelerate import Accelerator

    from parl_mt_lib.runtime import set_threads

    set_threads(1)
    # the ranks are forked from the test process: drop the accelerate state it may hold (an earlier in-process
    # trainer initialises it as a single process), so each rank joins the two-process group
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()
    acc = Accelerator(cpu=True)
    recipe = load_rl_recipe("recipes/toy/pag_rl.yaml", RECIPE)
    row, grads = _step(lambda tok: _samples(tok)[acc.process_index::acc.num_processes], recipe)
    torch.save({"row": row, "grads": grads, "world": acc.num_processes}, f"{out_dir}/rank{acc.process_index}.pt")


def test_two_gloo_processes_take_the_single_process_step(tmp_path):
    from accelerate import PartialState, debug_launcher

    PartialState()  # as after any in-process trainer in the same pytest run: the ranks must not inherit it
    debug_launcher(_rank, (str(tmp_path),), num_processes=2)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1)]
    assert [r["world"] for r in ranks] == [2, 2]
    row, grads = _step(_samples, load_rl_recipe("recipes/toy/pag_rl.yaml", RECIPE))
    for r in ranks:
        assert r["grads"].keys() == grads.keys() and grads
        for k, g in grads.items():
            assert torch.allclose(r["grads"][k], g, atol=1e-6, rtol=1e-4), k
        for k in ("loss", "grad_norm", "kl", "clip_frac", "logprob_gap_mean", "logprob_gap_max", "is_weight_mean"):
            assert r["row"][k] == pytest.approx(row[k], rel=1e-5, abs=1e-7), k
    assert row["grad_norm"] > 0 and not row["skipped"]


def test_sft_on_two_gloo_ranks_through_the_launcher(pag_dir, tmp_path):
    """``parl_mt_lib.launch sft`` under torchrun (2 CPU ranks): TRL's trainer sees world size 2 (each step takes
    a batch per rank) and one final/ is written."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from parl_mt_lib.runtime import REPO_ROOT

    import socket

    torchrun = Path(sys.executable).with_name("torchrun")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    out = tmp_path / "sft"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "PARL_MT_THREADS": "1"}
    res = subprocess.run([str(torchrun), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", port, "-m", "parl_mt_lib.launch",
                          "sft", "recipes/toy/sft.yaml", str(out), "--set", f"data={pag_dir}", "--set", "max_steps=3",
                          "--set", "per_device_train_batch_size=2", "--set", "save_steps=1000", "--set",
                          "logging_steps=1"], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    (summary,) = [json.loads(x) for x in res.stdout.splitlines() if x.startswith("{\"final_dir")]
    assert summary["world_size"] == 2 and summary["global_step"] == 3
    assert (out / "final" / "model.safetensors").exists() and (out / "final" / "fingerprint.json").exists()
    hist = json.loads((out / "log_history.json").read_text())
    assert hist[0]["num_tokens"] > 0 and hist[-1]["step"] == 3


@pytest.mark.parametrize("name", ["ddp", "fsdp", "zero3"])
def test_accelerate_configs_parse(name):
    import yaml

    from parl_mt_lib.runtime import repo_path

    cfg = yaml.safe_load((repo_path("recipes/accelerate") / f"{name}.yaml").read_text())
    assert cfg["distributed_type"] == {"ddp": "MULTI_GPU", "fsdp": "FSDP", "zero3": "DEEPSPEED"}[name]
    assert cfg["mixed_precision"] == "bf16" and cfg["num_processes"] >= 2
