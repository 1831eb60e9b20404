"""``rollout_backend: vllm`` stops with one line when it cannot run: vLLM not installed, a model the engine
cannot serve (the server's own reason and its log named), a backend given nothing to serve."""
import pytest

from parl_mt_lib import backends_vllm
from parl_mt_lib.backends import make_rollout_backend
from parl_mt_lib.runtime import ConfigError


def test_without_vllm_the_error_says_how_to_install(monkeypatch, toy_path):
    monkeypatch.setattr(backends_vllm, "vllm_python", lambda: None)
    with pytest.raises(ConfigError, match=r"needs vLLM: run `make install`") as err:
        make_rollout_backend("vllm", model_path=str(toy_path))
    assert "\n" not in str(err.value)


def test_exactly_one_thing_to_serve(toy):
    model, tok = toy
    with pytest.raises(ConfigError, match="exactly one of model=, model_path= or base_url="):
        make_rollout_backend("vllm", tokenizer=tok)
    with pytest.raises(ConfigError, match="exactly one of"):
        make_rollout_backend("vllm", model=model, tokenizer=tok, base_url="http://127.0.0.1:9")


@pytest.mark.model
@pytest.mark.skipif(not backends_vllm.vllm_available(), reason="vLLM not installed (make install builds .venv-vllm)")
def test_a_model_the_engine_cannot_serve_fails_in_one_line(tmp_path, toy_path):
    from pathlib import Path

    from transformers import AutoTokenizer

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_text('{"model_type": "no_such_architecture"}')
    with pytest.raises(ConfigError, match="the vLLM server exited with status") as err:
        make_rollout_backend("vllm", model_path=str(bad), tokenizer=AutoTokenizer.from_pretrained(toy_path))
    msg = str(err.value)
    assert "\n" not in msg and "full log:" in msg
    log = Path(msg.rsplit("full log: ", 1)[1].rstrip(")"))
    assert log.exists()
    log.unlink()
