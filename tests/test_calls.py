"""Unit tier: the call parser accepts BFCL / JSON formats and rejects everything else with a reason."""
import pytest

from parl_mt_lib.calls import Call, CallParseError, parse_calls, render_calls, strip_preamble


@pytest.mark.parametrize("text,expected", [
    ("[cd(folder='document'), mkdir(dir_name='temp')]", ["cd(folder='document')", "mkdir(dir_name='temp')"]),
    ("cd(folder='document')", ["cd(folder='document')"]),
    ("```python\n[ls(a=True)]\n```", ["ls(a=True)"]),
    ("[mean(numbers=[1, 2.5, -3])]", ["mean(numbers=[1, 2.5, -3])"]),
    ("[f(d={'a': (1, 2), 'b': None})]", ["f(d={'a': (1, 2), 'b': None})"]),
    ("[sort('final_report.pdf')]", ["sort('final_report.pdf')"]),
    ("[]", []),
    ("", []),
    ("<think>cd first</think>\n[cd(folder='x')]", ["cd(folder='x')"]),
    ("<summary>did a</summary><plan>do b</plan>[ls()]", ["ls()"]),
    ('<tool_call>\n{"name": "cd", "arguments": {"folder": "doc"}}\n</tool_call>', ["cd(folder='doc')"]),
    ('<tool_call>{"name": "a", "arguments": "{\\"x\\": 1}"}</tool_call><tool_call>{"name": "b", "arguments": {}}'
     '</tool_call>', ["a(x=1)", "b()"]),
])
def test_parses(text, expected):
    assert [c.render() for c in parse_calls(text)] == expected


HOSTILE = [
    "[__import__('os').system('rm -rf /')]",
    "import os; os.system('x')",
    "[os.system('ls')]",
    "[cd(folder=open('/etc/passwd').read())]",
    "[cd(folder=__builtins__)]",
    "[cd(folder=x.__class__)]",
    "[f(a=[i for i in range(10)])]",
    "[f(a=lambda: 1)]",
    "[f(**{'a': 1})]",
    "[f(a=1)(b=2)]",
    "[f(a=2**1000000)]",
    "[f(a=b)]",
    "[f(a=f'{x}')]",
    "[getattr(cd, '__globals__')]",
    "[_load_scenario(config={})]",
    "[__class__()]",
    "[f(_private=1)]",
    "[cd(folder='a'), 3]",
    "cd(folder='doc'",
    '<tool_call>{"name": "os.system", "arguments": {}}</tool_call>',
    '<tool_call>{"name": "__import__", "arguments": {}}</tool_call>',
    '<tool_call>{"name": "cd", "arguments": [1]}</tool_call>',
    "<tool_call>not json</tool_call>",
    "[" + "[" * 5000 + "]" * 5000 + "]",
    "[f(a='" + "x" * 2_000_000 + "')]",
    "I cannot do that, the file name is missing.",
]


@pytest.mark.parametrize("text", HOSTILE, ids=range(len(HOSTILE)))
def test_rejects_hostile(text):
    with pytest.raises(CallParseError) as info:
        parse_calls(text)
    assert isinstance(info.value, ValueError) and info.value.reason


def test_render_roundtrip_and_keywords():
    call = parse_calls("[sort('a.txt')]")[0]
    assert call.args == ("a.txt",) and call.kwargs == {}
    assert call.with_keywords(["file_name"]) == Call("sort", {"file_name": "a.txt"})
    with pytest.raises(CallParseError):
        call.with_keywords([])
    calls = parse_calls("[a(x='q\"uo\\'te'), b(y={'k': [1, None, True]})]")
    assert parse_calls(render_calls(calls)) == calls
    assert parse_calls(render_calls(calls[1:], "json")) == calls[1:]


def test_strip_preamble():
    rest, blocks = strip_preamble("<summary> s </summary>\n<plan>p</plan> [ls()]")
    assert rest == "[ls()]" and blocks == {"summary": "s", "plan": "p"}
