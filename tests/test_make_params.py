"""Every parameter the Makefile passes to a notebook exists in that notebook's parameters cell: papermill only
warns about an unknown one, and the run then silently uses the default (e.g. an evaluation on HF, not vLLM)."""
import json
import re
import shlex
import subprocess
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
