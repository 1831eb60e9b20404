"""Spawned job workers die with their parent: a killed notebook leaves no orphan training on the CPU."""
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from helpers import alive


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_workers_exit_when_the_parent_is_killed(tmp_path):
    pids = tmp_path / "pids"
    script = textwrap.dedent(f"""
        from parl_mt_lib.runtime import run_jobs
        from tests.helpers import sleep_and_record
        run_jobs(sleep_and_record, [{{"path": {str(pids)!r}}}] * 2, workers=2, progress=False)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=os.getcwd())
    deadline = time.time() + 60
    while time.time() < deadline and (not pids.exists() or len(pids.read_text().split()) < 2):
        time.sleep(0.2)
    workers = [int(p) for p in pids.read_text().split()]
    assert len(workers) == 2 and all(alive(p) for p in workers)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and any(alive(p) for p in workers):
        time.sleep(0.2)
    left = [p for p in workers if alive(p)]
    for p in left:
        os.kill(p, signal.SIGKILL)
    assert not left, f"orphaned workers {left}"


def test_a_build_lock_held_elsewhere_times_out_in_one_line(tmp_path):
    """Two processes needing one cached build (xdist workers, two notebooks): the second waits for the first; a
    lock never released (a builder stuck, or a soft lock left by a crash) gives a one-line error naming the file."""
    from filelock import FileLock

    from parl_mt_lib.runtime import ConfigError, build_lock

    target = tmp_path / "model"
    with FileLock(str(tmp_path / ".model.lock")):  # held by "another process"
        with pytest.raises(ConfigError, match=r"\.model\.lock") as err:
            with build_lock(target, timeout=0.2):
                pass
    assert "\n" not in str(err.value)
    with build_lock(target, timeout=0.2):  # released: taken at once
        target.mkdir()
    assert target.is_dir()
