"""Unit tier: the call parser accepts BFCL / JSON formats and rejects everything else with a reason."""
import json

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
    # values whose canonical render is a name, not a literal (repr: Ellipsis, inf, nan): a SmolLM2 policy copied
    # the signatures' `ls(a=...)` placeholder, and the next step's context re-parse of `ls(a=Ellipsis)` crashed 03
    "[ls(a=...)]",
    "[f(x=1e999)]",
    "[f(x=[1, -1e999])]",
    "[f(x={'k': (1e999j,)})]",
    '<tool_call>{"name": "f", "arguments": {"x": 1e999}}</tool_call>',   # json.loads takes these
    '<tool_call>{"name": "f", "arguments": {"x": [NaN, -Infinity]}}</tool_call>',
    "[f(x=0x" + "f" * 3600 + ")]",                                     # parses, but repr() raises (digit limit)
    '<tool_call>{"name": "f", "arguments": {"x": ' + "9" * 5000 + '}}</tool_call>',
    # JSON that parses but whose python rendering does not parse back (the step's stored text)
    '<tool_call>{"name": "f", "arguments": {"from": "SFO"}}</tool_call>',
    '<tool_call>{"name": "None", "arguments": {}}</tool_call>',
    '<tool_call>{"name": "f", "arguments": {"x": ' + "[" * 300 + "]" * 300 + '}}</tool_call>',
    '<tool_call>{"name": "f", "arguments": {"x": ' + "[" * 5000 + "]" * 5000 + '}}</tool_call>',
    "[f(x=" + "[" * 198 + "1+2j" + "]" * 198 + ")]",                   # repr adds a nesting level: (1+2j)
    "[f(x='" + "\u200b" * 19000 + "')]",                                # repr's escapes: 6x longer than the limit
    "[f(x=" + "1" * 400 + "+2j)]",                                      # literal_eval: OverflowError (int + complex)
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


# ------------------------------------------------------------------ comparison on parsed calls

import keyword  # noqa: E402

from hypothesis import given, settings, strategies as st  # noqa: E402

from parl_mt_lib.calls import call_key, same_call, same_calls, value_key  # noqa: E402

ORDER = {"mv": ["source", "destination"], "sort": ["file_name"]}

# (a, b, equal): one comparison rule for every caller (rewards, calls_equal, verification)
SAME_CALL = [
    ("mv(source='a', destination='b')", "mv(destination='b', source='a')", True),   # keyword order
    ("f(n=10)", "f(n=10.0)", True),                                                 # numbers by value
    ("f(n=-0.0)", "f(n=0)", True),
    ("f(n=10)", "f(n=10.5)", False),
    ("f(a=True)", "f(a=1)", False),                                                 # bool is not a number
    ("f(a=False)", "f(a=0.0)", False),
    ("f(a=True)", "f(a=True)", True),
    ("f(n=10)", "f(n='10')", False),                                                # a string is not a number
    ("f(x=None)", "f()", False),                                                    # an explicit None is an argument
    ("f(v=[1, {'k': 2.0}])", "f(v=[1.0, {'k': 2}])", True),                         # recursive
    ("f(v=[1, 2])", "f(v=[2, 1])", False),                                          # list order matters
    ("f(v=[True])", "f(v=[1])", False),
    ("f(v=(1, 2))", "f(v=[1, 2])", True),                                           # JSON has no tuple
    ("f(d={'a': 1, 'b': 2})", "f(d={'b': 2.0, 'a': 1})", True),
    ("f(d={1: 'x'})", "f(d={1.0: 'x'})", True),                                     # dict keys by value too
    ("f(s={1, 2})", "f(s={2.0, 1})", True),
    ("f(a=1)", "g(a=1)", False),
    ("f(a=1)", "f(b=1)", False),
    ("sort('a.txt')", "sort(file_name='a.txt')", True),                             # positional -> keyword
    ("mv('a', destination='b')", "mv(destination='b', source='a')", True),
    ("sort('a.txt', 'b')", "sort(file_name='a.txt')", False),                       # too many positionals
    ("other(1)", "other(1.0)", True),                                               # undocumented: positional
    ("other(1)", "other(x=1)", False),
    ('<tool_call>{"name": "f", "arguments": {"b": 2, "a": [1, 2]}}</tool_call>', "f(a=(1, 2.0), b=2)", True),
    ("f(", "f(", False),                                                            # unparseable: equals nothing
    ("[f(a=1), f(a=1)]", "f(a=1)", False),                                          # not exactly one call
]


@pytest.mark.parametrize("a,b,equal", SAME_CALL, ids=range(len(SAME_CALL)))
def test_same_call_table(a, b, equal):
    assert same_call(a, b, ORDER) is equal and same_call(b, a, ORDER) is equal


def test_call_key_is_hashable_and_calls_accepted():
    keys = {call_key("f(d={'a': [1, {2, 3}]}, n=1)"), call_key(Call("f", {"n": 1.0, "d": {"a": (1, {3.0, 2})}}))}
    assert len(keys) == 1 and call_key("f(n=1)") not in keys
    with pytest.raises(CallParseError):
        call_key("not a call(")
    assert same_calls(["cd(folder='a')", Call("ls", {"a": True})], [Call("cd", {"folder": "a"}), "ls(a=True)"])
    assert not same_calls(["cd(folder='a')"], ["cd(folder='a')", "ls()"])
    assert not same_calls(["cd(folder='a')", "bad("], ["cd(folder='a')", "bad("])
    assert same_calls([], [])


# random argument values: JSON-like, nested, with bools, ints and (integral and not) floats. The property tests
# are derandomized (same examples on every run and machine, like the rest of the suite); 4000 random examples
# per property passed when they were written.
_SCALARS = st.one_of(st.booleans(), st.none(), st.integers(-2**53, 2**53),
                     st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=8))
_VALUES = st.recursive(_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=4), inner, max_size=4)), max_leaves=12)
_NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(lambda k: not keyword.iskeyword(k))
_KWARGS = st.dictionaries(_NAMES, _VALUES, max_size=5)


def _retype(value, rnd):
    """The same argument written differently: ints as floats and integral floats as ints (bools kept),
    lists as tuples, dict entries reordered."""
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return float(value) if rnd.random() < 0.5 else value
    if isinstance(value, float):
        return int(value) if value.is_integer() and rnd.random() < 0.5 else value
    if isinstance(value, list):
        items = [_retype(v, rnd) for v in value]
        return tuple(items) if rnd.random() < 0.5 else items
    items = [(k, _retype(v, rnd)) for k, v in value.items()]
    rnd.shuffle(items)
    return dict(items)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(_KWARGS, st.randoms(use_true_random=False), st.sampled_from(["python", "json"]))
def test_property_keyword_order_and_number_forms_never_matter(kwargs, rnd, style):
    items = [(k, _retype(v, rnd)) for k, v in kwargs.items()]
    rnd.shuffle(items)
    original, variant = Call("f", kwargs), Call("f", dict(items))
    if style == "json":  # JSON has no tuples: the variant goes through json and back as lists
        variant = parse_calls(render_calls([variant], "json"))[0]
    else:
        variant_text = variant.render()
        assert parse_calls(variant_text)[0] == variant  # the retyped call survives the round trip as text
        variant = variant_text
    assert same_call(original.render(), variant) and call_key(original) == call_key(variant)
    assert same_calls([original, "g(x=1)"], [variant, "g(x=1.0)"])


def _flip_bools(value):
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, list):
        return [_flip_bools(v) for v in value]
    if isinstance(value, dict):
        return {k: _flip_bools(v) for k, v in value.items()}
    return value


@settings(max_examples=200, deadline=None, database=None, derandomize=True)
@given(_KWARGS)
def test_property_bool_never_equals_its_int(kwargs):
    flipped = _flip_bools(kwargs)
    had_bools = repr(flipped) != repr(kwargs)  # Python's == cannot tell: True == 1
    assert same_call(Call("f", kwargs), Call("f", flipped)) is not had_bools


_PLAIN = st.recursive(st.sampled_from([0, 1, 2, 0.0, 1.0, 2.5, "a", "1", None]), lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["a", "b"]), inner, max_size=2)), max_leaves=6)


@settings(max_examples=300, deadline=None, database=None, derandomize=True)
@given(_PLAIN, _PLAIN)
def test_property_without_bools_the_rule_is_pythons_equality(a, b):
    """BFCL's multi-turn checker compares executed state with ``==``: without bools and tuples, so do we."""
    assert (value_key(a) == value_key(b)) is (a == b)
    assert (hash(value_key(a)) == hash(value_key(b))) or a != b


def test_calls_equal_ignores_keyword_order_and_number_forms():
    """Regression (issue 11): verification and step exact match compared rendered strings."""
    from parl_mt_lib.pag import calls_equal

    gold = "mv(source='a.txt', destination='b.txt')"
    assert calls_equal("[mv(destination='b.txt', source='a.txt')]", gold)
    assert calls_equal("<summary>s</summary><plan>p</plan>[mv('a.txt', 'b.txt')]", gold)
    assert calls_equal("[tail(file_name='a.txt', lines=10.0)]", "tail(file_name='a.txt', lines=10)")
    assert not calls_equal("[mv(destination='a.txt', source='b.txt')]", gold)
    assert calls_equal("[cd(folder='x'), ls(a=True)]", "cd(folder='x'); ls(a=True)")
    assert not calls_equal("[ls(a=True), cd(folder='x')]", "cd(folder='x'); ls(a=True)")
    assert calls_equal("", None) and not calls_equal("[ls(a=True)]", None) and not calls_equal("[ls(", gold)


@pytest.mark.parametrize("style", ["python", "json"])
@pytest.mark.parametrize("text", [
    "[ls(a=True)]", "[f(d={'a': (1, 2), 'b': None})]", "[f(s={1, 2}, b=b'x', c=1j, n=-0.0)]", "[f(x=1e308, y=[])]",
    "[f(d={(1, 2): 'x', None: {3}})]",
])
def test_every_accepted_call_renders_to_text_that_parses_back(text, style):
    """What a step did goes back into the next prompt as re-rendered text (``context.calls_text``): whatever the
    parser accepts must render in both call styles without raising (and as chat-template tool calls), and the
    python rendering must parse back to the same calls."""
    calls = parse_calls(text)
    assert parse_calls(render_calls(calls, "python")) == calls
    assert render_calls(calls, style)
    from parl_mt_lib.calls import to_tool_calls

    json.dumps(to_tool_calls(calls))  # what the json style hands the chat template
