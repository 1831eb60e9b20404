"""Tool-docs modes of the system prompt: every function of the task is listed in ``signatures`` (required first,
optional as ``=...``), the prompt is far shorter than BFCL's JSON docs, and both progress and full-history contexts
use the one-sentence format and the short progress instruction with it."""
import pytest

from parl_mt_lib.bfcl import entry_by_id
from parl_mt_lib.context import FullHistoryContext, ProgressContext, system_prompt
from parl_mt_lib.progress_format import INSTRUCTION_SHORT
from parl_mt_lib.runtime import ConfigError


@pytest.fixture(scope="module")
def entry():
    return entry_by_id("multi_turn_base_0")


def test_signatures_list_every_function_with_required_params_first(entry):
    text = system_prompt(entry.functions, tool_docs="signatures")
    lines = text.splitlines()
    for f in entry.functions:
        (line,) = [ln for ln in lines if ln.startswith(f["name"] + "(")]
        req = f["parameters"].get("required", [])
        for p in f["parameters"]["properties"]:
            assert (p in line) and ((p + "=...") in line) == (p not in req), (line, p)
    assert len(text) < len(system_prompt(entry.functions, tool_docs="names")) < len(
        system_prompt(entry.functions, tool_docs="full"))


@pytest.mark.parametrize("ctx", [FullHistoryContext, ProgressContext])
def test_signatures_keep_the_short_format_sentence(entry, ctx):
    sys_text = ctx(tool_docs="signatures").system_message(entry)["content"]
    assert sys_text.startswith(system_prompt([], tool_docs="minimal"))
    assert ("ls(" in sys_text) and ("[func(param=value)]" in sys_text)
    assert (INSTRUCTION_SHORT in sys_text) == (ctx is ProgressContext)


def test_unknown_mode_is_one_line():
    with pytest.raises(ConfigError, match="unknown tool_docs 'sigs'"):
        system_prompt([], tool_docs="sigs")


def test_required_parameters_come_first():
    from parl_mt_lib.context import _signature_lines

    f = {"name": "f", "parameters": {"properties": {"opt": {}, "req": {}}, "required": ["req"]}}
    assert _signature_lines([f]) == "f(req, opt=...)"


@pytest.mark.parametrize("docs", ["minimal", "signatures", "described"])
def test_short_docs_refuse_the_json_style(docs):
    with pytest.raises(ConfigError, match="with style 'json'"):
        system_prompt([], style="json", tool_docs=docs)


def test_described_lists_every_function_with_its_first_sentence(entry):
    """``described``: each function's signature line (as in ``signatures``) then ': ' and the first sentence of its
    description; longer than signatures, shorter than BFCL's one-line ``names`` prompt and the JSON docs."""
    from parl_mt_lib.context import _first_sentence, _signature_lines

    text = system_prompt(entry.functions, tool_docs="described")
    lines = text.splitlines()
    assert text.startswith(system_prompt([], tool_docs="minimal"))
    for f in entry.functions:
        (line,) = [ln for ln in lines if ln.startswith(f["name"] + "(")]
        assert line == f"{_signature_lines([f])}: {_first_sentence(f)}"
        assert _first_sentence(f) and "Tool description" not in line
    sig = system_prompt(entry.functions, tool_docs="signatures")
    assert len(sig) < len(text) < len(system_prompt(entry.functions, tool_docs="names"))


@pytest.mark.parametrize("ctx", [FullHistoryContext, ProgressContext])
def test_described_keeps_the_short_format_sentence(entry, ctx):
    sys_text = ctx(tool_docs="described").system_message(entry)["content"]
    assert ("ls(" in sys_text) and ("[func(param=value)]" in sys_text) and ("List the contents" in sys_text)
    assert (INSTRUCTION_SHORT in sys_text) == (ctx is ProgressContext)


@pytest.mark.parametrize("domain", ["airline", "retail"])
@pytest.mark.parametrize("docs", ["described", "names"])
def test_one_line_docs_keep_one_line_per_tau2_tool(domain, docs):
    """τ-bench docstrings run for paragraphs (``Args:`` blocks after a blank line): the one-line modes still give
    exactly one line per tool, nothing of the rest."""
    from parl_mt_lib.context import tools_section
    from parl_mt_lib.envs.tau2_tasks import load_tasks

    (task,) = load_tasks(domain, "test", limit=1)
    lines = tools_section(task.functions, tool_docs=docs).splitlines()
    assert lines[0] == "Functions you can invoke:" and len(lines) == 1 + len(task.functions)
    assert not any("Args:" in ln for ln in lines)
