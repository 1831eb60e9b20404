"""SFT and RL on τ-bench data: a τ-bench PAG directory (tau2's train split) is read like any other by notebooks 02-04
(``pag_build.load_pag``), its tasks come back from the package and are asserted trainable (never a test task) on
every read; a tiny SFT trains on it; one RL iteration plays its training tasks with the scripted user."""
import json

import pytest

pytest.importorskip("tau2", reason="τ-bench needs the optional extra: pip install -e '.[tau]'")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydantic")

from parl_mt_lib.envs import tau2 as T  # noqa: E402
from parl_mt_lib.envs import tau2_pag as P  # noqa: E402
from parl_mt_lib.runtime import ConfigError  # noqa: E402

SFT = {"max_steps": 2, "per_device_train_batch_size": 2, "save_steps": 2, "logging_steps": 1}


@pytest.fixture(scope="module")
def pag_dir(tmp_path_factory):
    """3 retail training tasks (1 held out as validation), as notebooks 02-04 read them (~5 s)."""
    out = tmp_path_factory.mktemp("tau2") / "pag"
    P.build(["retail"], limit=3, out_dir=out)
    return out


@pytest.fixture(scope="module")
def sft_run(pag_dir, tmp_path_factory):
    from parl_mt_lib.sft import load_recipe, train_sft

    recipe = load_recipe("recipes/toy/sft_tau2.yaml", {"data": str(pag_dir), **SFT})
    return recipe, train_sft(recipe, tmp_path_factory.mktemp("tau2_sft") / "run")


def test_a_tau2_pag_directory_reads_like_any_other_and_asserts_disjointness(pag_dir, tmp_path):
    from parl_mt_lib.pag_build import load_pag

    splits, tasks = load_pag(pag_dir)
    assert {t.split for t in tasks.values()} == {"train"} and all(isinstance(t, T.Tau2Task) for t in tasks.values())
    assert all(t.user == "scripted" for t in tasks.values())  # the user source travels with the task
    train, val = ({e["task_id"] for e in splits[k]} for k in ("train", "validation"))
    assert len(train) == 2 and len(val) == 1 and not train & val and train | val == set(tasks)
    # a directory naming a test task stops on read (SFT and RL both read through load_pag)
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("train.jsonl", "validation.jsonl", "card.json"):
        (bad / name).write_text((pag_dir / name).read_text())
    (test_task,) = T.load_tasks("retail", "test", limit=1)
    lines = (pag_dir / "tasks.jsonl").read_text() + json.dumps(P.task_ref(test_task)) + "\n"
    (bad / "tasks.jsonl").write_text(lines)
    with pytest.raises(ConfigError, match="overlap"):
        load_pag(bad)


def test_tiny_sft_on_a_tau2_pag_directory(sft_run, pag_dir):
    from parl_mt_lib.sft import sft_dataset

    recipe, run = sft_run
    assert run["global_step"] == 2 and [h["loss"] for h in run["log_history"] if "loss" in h]
    rows = sft_dataset(recipe)
    system = rows[0]["prompt"][0]["content"]
    assert T.make_task("retail", "0").instructions in system and T.progress_instruction(short=True) in system
    assert "You should only return the function calls" not in system  # τ-bench's own preamble, not BFCL's
    assert len(rows) == len((pag_dir / "train.jsonl").read_text().splitlines())


def test_one_rl_iteration_on_two_tau2_training_tasks(sft_run, pag_dir, tmp_path):
    from parl_mt_lib.rl import load_rl_recipe, rl_tasks, train_rl

    _, run = sft_run
    recipe = load_rl_recipe("recipes/toy/pag_rl_tau2.yaml", {
        "data": str(pag_dir), "init": run["final_dir"], "iterations": 1, "group_size": 2, "tasks_per_iteration": 2,
        "task_pool": 2, "max_new_tokens": 16, "max_steps_per_turn": 2, "eval_tasks": 1, "save_every": 1})
    train, held = rl_tasks(recipe)
    assert len(train) == 2 and len(held) == 1 and {t.split for t in train + held} == {"train"}
    m = train_rl(recipe, tmp_path / "rl", progress=False)
    (row,) = [json.loads(line) for line in (tmp_path / "rl" / "iterations.jsonl").read_text().splitlines()]
    assert m["iterations"] == 1 and m["n_heldout_tasks"] == 1 and (tmp_path / "rl" / "final" / "config.json").exists()
    assert row["n_episodes"] == 4 and row["n_samples"] > 0 and set(row["terms"]) == set(recipe.rewards)
    assert 0 <= row["train_task_success"] <= 1 and row["prompt_tokens_per_step"] > 0


def test_a_reply_to_the_user_is_well_formed_for_the_format_reward():
    from parl_mt_lib.rewards import StepView, format_reward

    block = "<summary>Exchanged.</summary><plan>Tell the user.</plan>"
    reply = "All done. Is there anything else I can help you with?"
    assert format_reward(StepView(block + reply, "progress", replies=True)) == 1.0  # τ-bench: the turn's reply
    assert format_reward(StepView(reply, "plain", replies=True)) == 1.0
    assert format_reward(StepView(reply, "progress", replies=True)) == 0.0  # no progress block
    assert format_reward(StepView(block, "progress", replies=True)) == 0.0  # a block and nothing for the user
    assert format_reward(StepView(block + reply, "progress", error="no call syntax")) == 0.0  # BFCL: a failed step
    assert format_reward(StepView(block + "Sure: [get_user_details(", "progress")) == 0.0  # broken calls never


def test_tau2_recipes_point_at_tau2_data_and_checkpoints():
    from parl_mt_lib.rl import load_rl_recipe
    from parl_mt_lib.sft import load_recipe

    sft = load_recipe("recipes/toy/sft_tau2.yaml")
    assert sft.data == "results/01_pag_tau2" and sft.max_length >= 9141  # the longest full-history row (toy tokens)
    for name, view in (("pag_rl", "progress"), ("mt_grpo", "plain")):
        r = load_rl_recipe(f"recipes/toy/{name}_tau2.yaml")
        assert r.data == sft.data and r.init_path() == f"results/02_sft_tau2/{view}/seed0/final"


def test_a_test_task_stored_whole_or_examples_without_their_task_stop_on_read(pag_dir, tmp_path):
    """Defect (issue 14 review): ``load_pag`` checked only tasks stored as references, so a τ-bench test task
    written whole into tasks.jsonl reached SFT; an example whose task was missing gave a KeyError later."""
    from parl_mt_lib.pag_build import load_pag

    (test_task,) = T.load_tasks("retail", "test", limit=1)
    for name, tasks_line, extra_example in (
            ("whole", json.dumps({"id": test_task.id, "turns": [], "functions": []}), None),
            ("orphan", None, {"task_id": "nowhere_1"})):
        bad = tmp_path / name
        bad.mkdir()
        for f in ("train.jsonl", "validation.jsonl", "card.json", "tasks.jsonl"):
            (bad / f).write_text((pag_dir / f).read_text())
        if tasks_line:
            (bad / "tasks.jsonl").write_text((pag_dir / "tasks.jsonl").read_text() + tasks_line + "\n")
        if extra_example:
            (bad / "train.jsonl").write_text((pag_dir / "train.jsonl").read_text() + json.dumps(extra_example) + "\n")
        with pytest.raises(ConfigError, match="must be references" if name == "whole" else "does not hold"):
            load_pag(bad)
