"""PARL-MT data on τ-bench: PAG examples from tau2's train split (gold actions, scripted user, teacher summary/plan),
the progress context with the latest user message, SFT rows with the domain policy, and train/test disjointness."""
import pytest

pytest.importorskip("tau2", reason="τ-bench needs the optional extra: pip install -e '.[tau]'")
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:pydantic")

from parl_mt_lib.calls import parse_calls  # noqa: E402
from parl_mt_lib.envs import tau2 as T  # noqa: E402
from parl_mt_lib.envs import tau2_pag as P  # noqa: E402
from parl_mt_lib.progress_format import parse_progress  # noqa: E402
from parl_mt_lib.runtime import ConfigError  # noqa: E402


@pytest.fixture(scope="module")
def pag(tmp_path_factory):
    out = tmp_path_factory.mktemp("tau2_pag")
    return P.build(limit=2, out_dir=out), out


def test_examples_come_from_the_train_split_and_are_verified_by_tau2(pag):
    built, out = pag
    tasks, examples, card = built["tasks"], built["examples"], built["card"]
    assert {t.split for t in tasks.values()} == {"train"} and {t.domain for t in tasks.values()} == set(T.DOMAINS)
    test_ids = {t.id for d in T.DOMAINS for t in T.load_tasks(d, "test")}
    assert not set(tasks) & test_ids
    n = card["n_examples"]
    assert n["train"] + n["validation"] == len(examples) > 0 and card["dropped_tasks"] == []
    assert all(e["verified"] is True for e in examples)
    assert sum((out / f"{k}.jsonl").read_text().count("\n") for k in ("train", "validation")) == len(examples)
    assert (out / "tasks.jsonl").read_text().count("\n") == len(tasks) and (out / "card.json").exists()
    # one example per teacher step: every gold call, and one reply per scripted turn
    for tid, task in tasks.items():
        mine = [e for e in examples if e["task_id"] == tid]
        assert sum(e["kind"] == "call" for e in mine) == sum(len(t) for t in task.gold_calls)
        assert sum(e["kind"] == "reply" for e in mine) == len(task.user_turns)


def test_targets_are_teacher_progress_then_the_gold_call_or_reply(pag):
    built, _ = pag
    for e in built["examples"]:
        block = parse_progress(e["completion_progress"])
        assert block and block.summary and block.plan
        task = built["tasks"][e["task_id"]]
        if e["kind"] == "call":
            assert [c.render() for c in parse_calls(block.rest)] == [e["gold_call"]]
            assert parse_calls(e["completion_plain"])[0].render() == e["gold_call"]
        else:
            assert block.rest == e["completion_plain"] == task.gold_replies[e["turn"]]
            if e["turn"] + 1 < len(task.gold_calls):  # before a write: ask for the user's confirmation
                assert block.plan.startswith("Ask the user to confirm: " + task.gold_calls[e["turn"] + 1][0].name)


def test_progress_context_carries_the_latest_user_message(pag):
    built, _ = pag
    for e in built["examples"]:
        users = [m for m in e["progress_messages"] if m["role"] == "user"]
        assert len(users) == 1 and users[0]["content"].endswith(e["user_message"])  # only the latest, always
        first_of_later_turn = e["turn"] > 0 and e["progress_messages"][-1]["role"] == "user"
        if first_of_later_turn:  # the previous turn's summary is carried into the request
            assert users[0]["content"].startswith("<summary>") and e["user_message"] == T.CONFIRM
        # the full history holds every user message so far
        assert sum(m["role"] == "user" for m in e["plain_messages"]) == e["turn"] + 1


def test_sft_rows_carry_the_domain_policy(pag):
    built, _ = pag
    ex = built["examples"][:3]
    prog, plain = P.sft_rows(ex, built["tasks"], "progress"), P.sft_rows(ex, built["tasks"], "plain")
    for e, rp, rf in zip(ex, prog, plain):
        policy = built["tasks"][e["task_id"]].instructions
        assert policy in rp["prompt"][0]["content"] and policy in rf["prompt"][0]["content"]
        instruction = T.progress_instruction()
        assert instruction in rp["prompt"][0]["content"] and instruction not in rf["prompt"][0]["content"]
        assert rp["completion"][0]["content"] == e["completion_progress"]
    with pytest.raises(ConfigError):
        P.sft_rows(ex, built["tasks"], "neither")


def test_test_tasks_never_become_training_data(monkeypatch):
    (test_task,) = T.load_tasks("retail", "test", limit=1)
    with pytest.raises(ConfigError, match="train split only"):
        P.step_examples(test_task)
    real = T.load_tasks
    # were tau2's train split ever to contain a test task, the build stops before making any example
    monkeypatch.setattr(T, "load_tasks", lambda d, split="test", **kw: real(d, "test" if split == "train" else split,
                                                                           **kw))
    with pytest.raises(ConfigError, match="overlap"):
        P.build(["retail"], limit=1, verify=False)


def test_every_reply_target_is_a_well_formed_reply(pag):
    """Defect (issue 14 review): the gold confirmation ("I can do this next: name(...)") held call syntax, so the
    driver took it for a broken call (parse_error), the format reward scored the teacher's own target 0 and
    ``reply_ok`` refused it."""
    from parl_mt_lib.rewards import StepView, format_reward
    from parl_mt_lib.rollout import looks_like_calls
    from parl_mt_lib.sft_eval import reply_ok

    replies = [e for e in pag[0]["examples"] if e["kind"] == "reply"]
    assert any("confirm" in e["completion_plain"] for e in replies)
    for e in replies:
        assert not looks_like_calls(e["completion_plain"]), e["completion_plain"]
        assert reply_ok(e["completion_plain"], "plain") and reply_ok(e["completion_progress"], "progress")
        # a tau2 step (replies=True): a call-free step is the turn's message, judged by reply_ok
        assert format_reward(StepView(e["completion_progress"], "progress", replies=True)) == 1.0
