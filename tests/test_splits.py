"""Train/test hygiene (issue 11): fresh synthetic initial states, whole-task hold-out splits, sub-sequence
overlap, and BFCL hold-out tasks that reach RL while evaluation leaves them out."""
import copy
import importlib
import json

import pytest

from parl_mt_lib.bfcl import CATEGORIES, CLASSES, entry_by_id, load_entries
from parl_mt_lib.calls import Call
from parl_mt_lib.runtime import ConfigError
from parl_mt_lib.splits import OverlapError, assert_disjoint, holdout_split, overlap_report
from parl_mt_lib.synth import SynthConfig, synthesize

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def tasks():
    return synthesize(SynthConfig(n_tasks=40, seed=11))


def _instance(cls, config, long_context):
    from bfcl_eval.constants.executable_backend_config import CLASS_FILE_PATH_MAPPING

    inst = getattr(importlib.import_module(CLASS_FILE_PATH_MAPPING[cls]), cls)()
    inst._load_scenario(copy.deepcopy(config), long_context=long_context)
    return inst


def test_synthetic_initial_states_differ_from_every_bfcl_state(tasks):
    """Checked with BFCL's own state comparison (the checker's ``_compare_instances``), not ours."""
    from bfcl_eval.constants.executable_backend_config import STATELESS_CLASSES
    from bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker import _compare_instances

    bfcl = {}  # class -> distinct (config, long_context) over all four categories
    for e in load_entries("all"):
        for cls in e.involved_classes:
            if cls not in STATELESS_CLASSES:
                key = (json.dumps(e.initial_config.get(cls, {}), sort_keys=True), e.long_context)
                bfcl.setdefault(cls, {})[key] = _instance(cls, e.initial_config.get(cls, {}), e.long_context)
    used = {c for t in tasks for c in t.involved_classes}
    assert used == set(CLASSES) and STATELESS_CLASSES == ["MathAPI"]  # every stateful class is exercised
    same = []
    for t in tasks:
        for cls in set(t.involved_classes) - set(STATELESS_CLASSES):
            mine = _instance(cls, t.initial_config[cls], False)
            for theirs in bfcl[cls].values():
                if hasattr(theirs, "long_context"):
                    mine.long_context = theirs.long_context  # the flag alone does not make a state new
                if _compare_instances(mine, theirs)[0]:
                    same.append((t.id, cls))
                    break
    assert not same, f"{len(same)} synthetic initial states equal a BFCL evaluation state: {same[:5]}"


def test_bfcl_state_is_caught_and_rejected(tasks, monkeypatch):
    from parl_mt_lib import synth

    task = next(t for t in tasks if "TicketAPI" in t.involved_classes)
    planted = copy.deepcopy(task)
    planted.initial_config["TicketAPI"] = copy.deepcopy(entry_by_id("multi_turn_base_100").initial_config.get(
        "TicketAPI", {}))
    with pytest.raises(OverlapError, match="initial_states"):
        assert_disjoint([planted])
    monkeypatch.setitem(synth.PERTURB, "TicketAPI", lambda conf, rng: None)  # BFCL's ticket states, unperturbed
    stats = {}
    got = synthesize(SynthConfig(n_tasks=3, seed=3, classes=("TwitterAPI", "TicketAPI")), stats=stats)
    assert stats["rejected"].get("overlap:initial_states", 0) > 0
    assert all(t.involved_classes == ["TwitterAPI"] for t in got)


def test_holdout_split_keeps_variants_together_for_any_size():
    for seed, sizes in ((0, [*range(1, 14), 37, 199, 200, 201, 401, 555, 796]), (5, [2, 6, 50, 203])):
        for n in sizes:
            split = holdout_split(n, seed=seed)
            train, evals = set(split["train_ids"]), set(split["eval_ids"])
            for i in range(200):
                variants = {f"{c}_{i}" for c in CATEGORIES}
                assert variants <= train or variants <= evals, (n, seed, i)
            assert not train & evals and len(train) + len(evals) == 800
            assert split["n_train"] == len(train) >= n and len(train) % len(CATEGORIES) == 0, (n, seed)
    for bad in (0, 797, 2.5):
        with pytest.raises(ConfigError, match="n_train must be"):
            holdout_split(bad)


def test_holdout_split_sides_share_no_subsequence():
    split = holdout_split(200, seed=1)
    train = load_entries("all", ids=split["train_ids"])
    rep = overlap_report(train, split["eval_ids"], states=False)
    assert rep["n_overlapping"] == 0 and rep["rule"]["min_run"] == 2


def test_shared_subsequence_is_caught_single_call_is_not(tasks):
    bfcl = entry_by_id("multi_turn_base_0")
    run = [c for turn in bfcl.gold_calls for c in turn][1:3]  # two consecutive gold calls of a BFCL entry
    shuffled = [Call(c.name, dict(reversed(list(c.kwargs.items())))) for c in run]  # keyword order must not matter
    victim = next(t for t in tasks if len(t.gold_calls) >= 2 and "GorillaFileSystem" not in t.involved_classes)
    planted = copy.deepcopy(victim)
    planted.gold_calls[0] = planted.gold_calls[0] + shuffled[:1]
    planted.gold_calls[1] = shuffled[1:] + planted.gold_calls[1]  # the run spans a turn boundary
    with pytest.raises(OverlapError, match="gold_runs"):
        assert_disjoint([planted])
    single = copy.deepcopy(victim)
    single.gold_calls[0] = single.gold_calls[0] + [Call("ls", {})]  # one call every file task uses
    assert overlap_report([single])["n_overlapping"] == 0
    assert overlap_report([single], min_run=1)["gold_runs"] == [single.id]


def test_bfcl_holdout_tasks_reach_rl_and_evaluation_excludes_them(tmp_path):
    from parl_mt_lib.evaluate import evaluate
    from parl_mt_lib.pag_build import PAGConfig, build_pag
    from parl_mt_lib.rl_recipe import RLRecipe, rl_tasks
    from parl_mt_lib.runtime import read_jsonl

    pag = tmp_path / "h"
    build_pag(PAGConfig(source="bfcl_holdout", n_holdout=8, verify_limit=0, seed=2, paraphrase=False), pag,
              progress=False)
    split = json.loads((pag / "split.json").read_text())
    train, held = rl_tasks(RLRecipe(data=str(pag), tasks_per_iteration=1))
    all_ids = {e.id for e in load_entries("all")}
    assert train and {t.id for t in train} <= all_ids  # BFCL entries train RL
    assert not {t.id for t in train + held} & set(split["eval_ids"])
    assert {t.id for t in train + held} <= set(split["train_ids"])
    from parl_mt_lib.splits import excluded_ids  # (after rl_tasks, so the old code fails on rl_tasks itself)

    assert sorted(excluded_ids(pag)) == sorted(split["train_ids"])
    evaluate("oracle", entries=[entry_by_id(train[0].id), entry_by_id(split["eval_ids"][0])],
                 exclude_ids=excluded_ids(pag), results_dir=tmp_path / "e", progress=False)
    assert [r["id"] for r in read_jsonl(tmp_path / "e" / "entries.jsonl")] == [split["eval_ids"][0]]
