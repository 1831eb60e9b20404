"""Unit tier: the executor dispatches only to public methods of the entry's classes."""
from parl_mt_lib.bfcl import entry_by_id
from parl_mt_lib.calls import Call
from parl_mt_lib.env import Environment, state_diff


def test_dispatch_and_errors():
    env = Environment(entry_by_id("multi_turn_base_0"))
    before = env.state()
    assert env.execute(Call("cd", {"folder": "document"})) == '{"current_working_directory": "document"}'
    assert env.execute(Call("mkdir", {"dir_name": "temp"})) == "None"
    diff = state_diff(before, env.state())
    assert "GorillaFileSystem" in diff
    assert env.execute(Call("_load_scenario", {"scenario": {}})).startswith("Error during execution: name")
    assert env.execute(Call("__init__")).startswith("Error during execution")
    assert env.execute(Call("eval", {"source": "1"})) == "Error during execution: name 'eval' is not defined"
    assert env.execute(Call("kill")) == "Error during execution: Function call kill is not allowed."
    assert env.execute(Call("cd", {"nope": 1})).startswith("Error during execution: ")
    assert env.execute(Call("cd", args=(1, 2, 3))).startswith("Error during execution: ")


def test_instances_are_independent():
    e = entry_by_id("multi_turn_base_0")
    a, b = Environment(e), Environment(e)
    a.execute(Call("cd", {"folder": "document"}))
    assert a.state() == b.state()  # the working directory is private state: BFCL does not compare it
    a.execute(Call("mkdir", {"dir_name": "new"}))
    assert a.state() != b.state() and Environment(e).state() == b.state()
