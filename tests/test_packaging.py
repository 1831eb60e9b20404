"""environment.yml (the conda mirror) pins what pyproject.toml and the Makefile's --no-deps installs pin."""
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PIN = r"[A-Za-z0-9_.\-]+==[^\s\"',#]+"


def _pins(lines) -> set[str]:
    return {m.group(0) for ln in lines for m in [re.search(PIN, ln.replace(" ", ""))] if m}


def test_conda_mirror_has_every_pin():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    wanted = _pins(project["dependencies"] + extras["dev"] + extras["smollm2"])
    env = (ROOT / "environment.yml").read_text().splitlines()
    listed = {ln.strip()[2:].strip() for ln in env if ln.strip().startswith("- ")}  # pip entries, not comments
    assert wanted - listed == set(), f"environment.yml lacks {sorted(wanted - listed)}"
    assert ".[tau]" in " ".join(listed)
    # --no-deps installs are commands in its header comment, each exactly as the Makefile pins it
    no_deps = _pins(ln for ln in (ROOT / "Makefile").read_text().splitlines() if "_PIN :=" in ln)
    commands = {m.group(1) for ln in env for m in [re.search(r"pip install --no-deps (" + PIN + r")\s", ln + " ")] if m}
    assert no_deps and no_deps <= commands, f"environment.yml lacks pip install --no-deps {sorted(no_deps - commands)}"
