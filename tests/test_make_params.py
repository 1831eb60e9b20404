"""Every parameter the Makefile passes to a notebook exists in that notebook's parameters cell: papermill only
warns about an unknown one, and the run then silently uses the default (e.g. an evaluation on HF, not vLLM)."""
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _parameters(nb: Path) -> set[str]:
    cells = [c for c in json.loads(nb.read_text())["cells"] if "parameters" in c["metadata"].get("tags", [])]
    assert len(cells) == 1, nb
    return {m.group(1) for ln in "".join(cells[0]["source"]).splitlines()
            for m in [re.match(r"([A-Za-z_]\w*)\s*(?::[^=]+)?=", ln)] if m}


@pytest.mark.parametrize("target", ["reproduce", "reproduce-small"])
def test_make_passes_only_known_parameters(target):
    out = subprocess.run(["make", "-n", "-W", "pyproject.toml", target], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    runs = [shlex.split(ln) for ln in out.replace("\\\n", " ").splitlines() if " papermill " in ln]
    assert runs, out[-500:]
    for argv in runs:
        nb = ROOT / next(a for a in argv if a.startswith("notebooks/") and a.endswith(".ipynb"))
        names = [argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "-p"]
        names += [argv[i + 1].split(":")[0] for i, a in enumerate(argv[:-1]) if a == "-y"]
        unknown = set(names) - _parameters(nb)
        assert not unknown, f"{nb.name} has no parameter(s) {sorted(unknown)}"


def _make_install(tmp_path, *args, stamp: bool = False):
    (tmp_path / "Makefile").write_text((ROOT / "Makefile").read_text())
    (tmp_path / "pyproject.toml").write_text("")
    if stamp:  # an installed checkout (VLLM=0: the one venv), its stamp newer than pyproject.toml
        path = tmp_path / ".venv" / ".parl-mt-installed"
        path.parent.mkdir()
        path.touch()
        t = (tmp_path / "pyproject.toml").stat().st_mtime + 60
        os.utime(path, (t, t))
    return subprocess.run(["make", "install", f"PYTHON={sys.executable}", "VLLM=0", *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_install_refuses_a_full_disk_in_one_line_before_creating_anything(tmp_path):
    """A first install on a disk without room stops up front with one line, not ~1 min later with pip's
    "[Errno 28] No space left on device" in the middle of its log (CI, 2026-12-05); nothing is created."""
    proc = _make_install(tmp_path, "MIN_FREE_GB=1000000000")
    assert proc.returncode != 0
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("parl-mt:")]
    assert len(lines) == 1 and "GiB free here" in lines[0] and "MIN_FREE_GB=0" in lines[0], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Makefile", "pyproject.toml"]  # no venv started


def test_an_installed_checkout_is_never_stopped_by_the_disk_check(tmp_path):
    """With the install stamp up to date nothing is installed and nothing checked, however little disk is free."""
    proc = _make_install(tmp_path, "MIN_FREE_GB=1000000000", stamp=True)
    assert proc.returncode == 0 and "parl-mt:" not in proc.stderr, proc.stderr
    assert "is up to date" in proc.stdout and not (tmp_path / ".venv" / "bin").exists(), proc.stdout


def test_a_non_numeric_disk_threshold_is_one_line_not_a_traceback(tmp_path):
    proc = _make_install(tmp_path, "MIN_FREE_GB=lots")
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("parl-mt:")]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1 and "MIN_FREE_GB must be a number" in lines[0] and "'lots'" in lines[0], proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Makefile", "pyproject.toml"]
