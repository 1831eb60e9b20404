"""environment.yml (the conda mirror) pins what pyproject.toml and the Makefile's --no-deps installs pin."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pins(lines) -> set[str]:
    return {m.group(0).replace(" ", "") for ln in lines for m in [re.search(r"[A-Za-z0-9_.\-]+\s*==\s*[^\s\"',#]+", ln)] if m}


def test_conda_mirror_has_every_pin():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = _pins(project["dependencies"] + extras["dev"] + extras["smollm2"])
    no_deps = _pins(ln for ln in (ROOT / "Makefile").read_text().splitlines() if "_PIN :=" in ln)
    env = (ROOT / "environment.yml").read_text()
    missing = sorted(p for p in wanted | no_deps if p not in env.replace(" ", ""))
    assert not missing, f"environment.yml lacks {missing}"
    assert ".[tau]" in env
