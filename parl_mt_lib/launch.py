"""Command-line entry for multi-process training: ``accelerate launch ... -m parl_mt_lib.launch sft RECIPE OUT``.

SFT goes through TRL's ``SFTTrainer``, which takes the process group ``accelerate launch`` sets up (DDP, FSDP or
DeepSpeed ZeRO-3 from ``recipes/accelerate/*.yaml``) and shards the data itself; every rank runs
:func:`parl_mt_lib.sft.train_sft` with the same recipe and output directory. Rank 0 claims the directory first
(its fingerprint, the resolved recipe), the others follow once it has (``main_process_first``), so they find the
same claim and resume it. The RL update is data-parallel too (:func:`parl_mt_lib.rl_update.update` sums gradients
over ranks; ``tests/test_scaleout.py``); vLLM rollouts scale with ``--tensor-parallel-size`` on the engine.

Usage::

    accelerate launch --config_file recipes/accelerate/ddp.yaml -m parl_mt_lib.launch \\
        sft recipes/qwen2.5-7b-instruct/sft.yaml results/02_sft_qwen/progress/seed0 --set seed=0
    ACCELERATE_USE_CPU=true torchrun --nproc_per_node 2 -m parl_mt_lib.launch sft recipes/toy/sft.yaml \\
        /tmp/sft_ddp --set max_steps=4                     # two CPU processes (gloo): tests/test_scaleout.py

(On a CPU ``accelerate launch --cpu --num_processes 2`` starts one process unless MPI is configured; ``torchrun``
starts the ranks and accelerate picks the process group up from its environment.)

    >>> parse_sets(["max_steps=4", "view=plain", "lora=false"])
    {'max_steps': 4, 'view': 'plain', 'lora': False}
"""
from __future__ import annotations

import argparse
import json
import sys


def parse_sets(items: list[str]) -> dict:
    """``KEY=YAML`` overrides -> dict (values parsed as YAML: numbers, booleans, lists)."""
    import yaml

    from .runtime import ConfigError

    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set takes KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m parl_mt_lib.launch", description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["sft"])
    ap.add_argument("recipe")
    ap.add_argument("out_dir")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="recipe override (repeatable)")
    a = ap.parse_args(argv)
    from accelerate import PartialState

    from .runtime import ConfigError, set_threads
    from .sft import load_recipe, train_sft

    set_threads()
    state = PartialState()
    try:
        recipe = load_recipe(a.recipe, parse_sets(a.set))
        with state.main_process_first():  # rank 0 claims out_dir; the others then find the same claim
            if state.is_main_process:
                from .runtime import claim_dir
                from .sft import sft_fingerprint

                claim_dir(a.out_dir, sft_fingerprint(recipe), what="recipe or inputs", hint="pass a new output directory")
        run = train_sft(recipe, a.out_dir)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if state.is_main_process:
        print(json.dumps({"final_dir": run["final_dir"], "global_step": run["global_step"],
                          "world_size": state.num_processes, "train_runtime_s": round(run["train_runtime_s"], 1)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
