"""What a run records about the code it ran (``runtime.provenance``)."""
from __future__ import annotations


def test_provenance_names_the_code_a_run_started_from_when_the_checkout_moved(monkeypatch):
    """A 45-min probe ran while its checkout took two commits; its record named only the last one (review finding)."""
    from parl_mt_lib import runtime

    monkeypatch.setattr(runtime, "git_sha", lambda: "b" * 40)
    monkeypatch.setattr(runtime, "_GIT_SHA_AT_START", "a" * 40 + "-dirty")
    p = runtime.provenance()
    assert p["git_sha"] == "b" * 40 and p["git_sha_at_start"] == "a" * 40 + "-dirty"
    monkeypatch.setattr(runtime, "_GIT_SHA_AT_START", "b" * 40)
    assert "git_sha_at_start" not in runtime.provenance()
