"""Flow files: YAML/JSON load and dump, and every kind of bad file giving one clear error."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from executor import Flow, FlowValidationError, RetryPolicy, Step, load_flow
from executor.model import yaml_limits
from executor.model.files import MAX_BYTES, MAX_DEPTH, MAX_NODES, MAX_STEPS, MAX_STRING

RICH = Flow(
    name="user_report",
    version="2.1",
    description="Ünïcode déscription — with a dash",
    steps=[
        Step(id="user", tool="fetch_user", inputs={"user_id": "$input.user_id"}, timeout=5.0),
        Step(
            id="orders",
            tool="fetch_orders",
            inputs={"user_id": "$input.user_id", "limit": 10, "since": "2020-01-01"},
            retry=RetryPolicy(max_attempts=3, backoff=0.1, retry_on=("TimeoutError",)),
            queue="io",
        ),
        Step(
            id="check",
            tool="score",
            inputs={
                "values": [1, 2.5, -3, True, None, "yes", "no", "on", "1.0", "null", "~", ""],
                "nested": {"a": {"b": ["$steps.orders.0", "$$literal", "# not a comment"]}},
                "multiline": "line one\nline two\n",
                "colon": "key: value",
                "quote": 'it\'s "quoted"',
            },
            depends_on=["user"],
            description="scores",
        ),
        Step(
            id="render",
            tool="render",
            inputs={"name": "$steps.user.name", "url": "$item", "i": "$index"},
            map="$steps.orders.urls",
            when="steps.check.score > 0.5 and input.mode == 'fast'",
            trigger="none_failed",
        ),
        Step(id="cleanup", tool="noop", depends_on=["render"], trigger="all_done"),
    ],
    output={"report": "$steps.render", "user": "$steps.user.name", "n": 3},
    on_failure="continue",
    timeout=60.0,
)
MINIMAL = Flow(name="m", steps=[Step(id="a", tool="t")])


# --- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize("flow", [RICH, MINIMAL], ids=["rich", "minimal"])
def test_yaml_round_trip(flow):
    text = flow.to_yaml()
    assert isinstance(text, str)
    assert Flow.from_yaml(text) == flow
    assert yaml.safe_load(text)["name"] == flow.name  # plain YAML, readable by anyone


@pytest.mark.parametrize("flow", [RICH, MINIMAL], ids=["rich", "minimal"])
def test_json_round_trip(flow):
    text = flow.to_json()
    assert json.loads(text)["name"] == flow.name
    assert Flow.from_json(text) == flow


@pytest.mark.parametrize("suffix", [".yaml", ".yml", ".json", ".flow"])
def test_load_flow_from_files(tmp_path, suffix):
    path = tmp_path / f"flow{suffix}"
    path.write_text(RICH.to_json() if suffix == ".json" else RICH.to_yaml(), encoding="utf-8")
    assert load_flow(path) == RICH
    assert load_flow(str(path)) == RICH


def test_dump_omits_defaults():
    data = yaml.safe_load(MINIMAL.to_yaml())
    assert data == {"name": "m", "steps": [{"id": "a", "tool": "t"}]}
    assert json.loads(MINIMAL.to_json()) == data


def test_design_example_yaml_loads():
    text = """
name: user_report
version: "1"
output: $steps.render
steps:
  - id: user
    tool: fetch_user
    inputs: {user_id: $input.user_id}
  - id: render
    tool: render
    inputs: {name: $steps.user.name}
"""
    flow = Flow.from_yaml(text)
    assert flow.output == "$steps.render"
    assert flow.step("user").inputs == {"user_id": "$input.user_id"}
    assert flow.validate().validate_flow().deps == {"user": (), "render": ("user",)}


def test_yaml_features_that_are_json_data_work():
    text = """
name: anchors
defaults: &defaults {tool: t, timeout: 2.5}
steps:
  - <<: *defaults
    id: a
  - <<: *defaults
    id: b
    tool: other
"""
    with pytest.raises(FlowValidationError, match="defaults: unknown field"):
        Flow.from_yaml(text)  # unknown top-level field, even when used as an anchor
    text = """
name: anchors
steps:
  - &first {id: a, tool: t, timeout: 2.5, inputs: {x: &shared [1, 2]}}
  - {<<: *first, id: b, inputs: {x: *shared}}
"""
    flow = Flow.from_yaml(text)
    assert flow.step("b").tool == "t" and flow.step("b").timeout == 2.5
    assert flow.step("b").inputs == {"x": [1, 2]}


def test_yaml_timestamps_stay_strings_so_round_trips_are_equal():
    flow = Flow.from_yaml("name: d\nsteps:\n  - {id: a, tool: t, inputs: {day: 2020-01-02}}\n")
    assert flow.step("a").inputs["day"] == "2020-01-02"
    assert Flow.from_yaml(flow.to_yaml()) == flow


@pytest.mark.parametrize(
    "text",
    [
        "\x85",
        "a\x85b",
        "\u2028",
        "\u2029",
        "\r\n",
        "\t",
        "\x00",
        "\ufeff",
        "é ü 日本",
        "😀",
        "  lead",
    ],
)
def test_awkward_strings_round_trip(text):
    # U+0085 (NEL) is written raw in single quotes by PyYAML and reads back as a line
    # break; the dumper double-quotes it instead.
    flow = Flow(name="s", steps=[Step(id="a", tool="t", inputs={"v": text, "k": {text: [text]}})])
    assert Flow.from_yaml(flow.to_yaml()) == flow
    assert Flow.from_json(flow.to_json()) == flow


def test_byte_order_mark_is_accepted():
    assert Flow.from_json(b"\xef\xbb\xbf" + MINIMAL.to_json().encode()) == MINIMAL
    assert Flow.from_yaml(b"\xef\xbb\xbf" + MINIMAL.to_yaml().encode()) == MINIMAL


def test_limits_are_inclusive(tmp_path):
    # Exactly at each limit still loads.
    flow = Flow(name="big", steps=[Step(id=f"s{i}", tool="t") for i in range(MAX_STEPS)])
    path = tmp_path / "max.json"
    path.write_text(flow.to_json())
    assert len(load_flow(path).steps) == MAX_STEPS
    # The flow is level 0, steps 1, a step 2, its inputs 3: values nest to MAX_DEPTH.
    nested: object = 1
    for _ in range(MAX_DEPTH - 4):
        nested = [nested]
    deep = Flow(name="deep", steps=[Step(id="a", tool="t", inputs={"x": nested})])
    assert Flow.from_yaml(deep.to_yaml()) == deep
    assert Flow.from_json(deep.to_json()) == deep
    deeper = Flow(name="deep", steps=[Step(id="a", tool="t", inputs={"x": [nested]})])
    for parse, text in ((Flow.from_yaml, deeper.to_yaml()), (Flow.from_json, deeper.to_json())):
        with pytest.raises(FlowValidationError, match=f"nested deeper than {MAX_DEPTH}"):
            parse(text)
    long = Flow(name="long", steps=[Step(id="a", tool="t", description="x" * MAX_STRING)])
    assert Flow.from_yaml(long.to_yaml()) == long
    longer = Flow(name="long", steps=[Step(id="a", tool="t", description="x" * MAX_STRING + "x")])
    with pytest.raises(FlowValidationError, match=f"over the {MAX_STRING} limit"):
        Flow.from_json(longer.to_json())


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(inputs=st.dictionaries(st.from_regex(r"[a-z_][a-z0-9_]{0,8}", fullmatch=True), json_values))
def test_round_trip_any_json_inputs(inputs):
    flow = Flow(name="p", steps=[Step(id="a", tool="t", inputs=inputs)], output=inputs or None)
    assert Flow.from_yaml(flow.to_yaml()) == flow
    assert Flow.from_json(flow.to_json()) == flow


# --- bad files ---------------------------------------------------------------------------

ALIAS_BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
name: bomb
steps: [{id: a, tool: t, inputs: {x: *i}}]
"""
MERGE_BOMB = """\
a: &a {k0: 1, k1: 1, k2: 1, k3: 1, k4: 1, k5: 1, k6: 1, k7: 1, k8: 1, k9: 1}
b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
name: x
steps: []
"""


def _steps_json(n: int) -> str:
    return json.dumps({"name": "many", "steps": [{"id": f"s{i}", "tool": "t"} for i in range(n)]})


def _steps_yaml(n: int) -> str:
    return "name: many\nsteps:\n" + "".join(f"  - id: s{i}\n    tool: t\n" for i in range(n))


BAD_FILES: list[tuple[str, str | bytes, list[str]]] = [
    # (file name, content, fragments the message must contain, case-insensitive)
    ("list.yaml", "- a\n- b\n", ["must be a mapping", "not a list"]),
    ("scalar.yaml", "just a string\n", ["must be a mapping", "not a string"]),
    ("number.json", "42", ["must be a mapping", "not a number"]),
    ("list.json", '[{"name": "x"}]', ["must be a mapping", "not a list"]),
    ("truncated.json", '{"name": "x", "steps": [{"id": "a",', ["invalid json", "line 1"]),
    ("truncated2.json", '{\n  "name": "x",\n  "steps": [\n', ["invalid json", "line 4"]),
    ("trailing.json", '{"name": "x", "steps": []} extra', ["invalid json", "extra data"]),
    ("single-quotes.json", "{'name': 'x'}", ["invalid json", "line 1"]),
    ("invalid.yaml", "name: x\nsteps: [\n  - id: a\n  tool: b\n", ["invalid yaml", "line 3"]),
    ("badindent.yaml", "name: x\n  steps: []\n", ["invalid yaml", "line 2"]),
    ("tab.yaml", "name: x\n\tsteps: []\n", ["invalid yaml", "line 2"]),
    ("unclosed.yaml", 'name: "x\nsteps: []\n', ["invalid yaml", "line"]),
    (
        "pyobj.yaml",
        'name: !!python/object/apply:os.system ["echo hi"]\nsteps: []\n',
        ["unsupported yaml tag", "python/object/apply:os.system", "line 1"],
    ),
    (
        "pyobj-root.yaml",
        '!!python/object/apply:os.system ["echo hi"]\n',
        ["unsupported yaml tag", "python/object/apply"],
    ),
    (
        "pyname.yaml",
        "name: x\nsteps: []\noutput: !!python/name:os.system\n",
        ["unsupported yaml tag", "python/name:os.system", "line 3"],
    ),
    (
        "pymodule.yaml",
        "name: x\nsteps: []\noutput: !!python/module:os\n",
        ["unsupported yaml tag", "python/module"],
    ),
    ("custom-tag.yaml", "name: !custom x\nsteps: []\n", ["unsupported yaml tag", "!custom"]),
    ("binary.yaml", "name: x\nsteps: []\noutput: !!binary aGk=\n", ["!!binary", "json data"]),
    ("set.yaml", "name: x\nsteps: []\noutput: !!set {a, b}\n", ["!!set"]),
    ("omap.yaml", "name: x\nsteps: []\noutput: !!omap [a: 1]\n", ["!!omap"]),
    ("empty.yaml", "", ["empty"]),
    ("empty.json", b"", ["empty"]),
    ("blank.yaml", "  \n\n\t\n", ["empty"]),
    ("comments.yaml", "# only a comment\n# another\n", ["empty"]),
    ("null.yaml", "null\n", ["empty"]),
    ("null.json", "null", ["empty"]),
    ("two-docs.yaml", "name: a\nsteps: []\n---\nname: b\nsteps: []\n", ["single document"]),
    ("steps-type.yaml", "name: x\nsteps: 5\n", ["steps", "valid list"]),
    ("name-type.json", '{"name": ["x"], "steps": []}', ["name", "valid string"]),
    ("missing-steps.yaml", "name: x\n", ["steps", "field required"]),
    ("missing-name.yaml", "steps: []\n", ["name", "field required"]),
    (
        "step-types.yaml",
        "name: x\nsteps:\n  - id: a\n    tool: t\n    timeout: soon\n    depends_on: b\n",
        ["2 problems", "steps.0.timeout (step 'a')", "steps.0.depends_on (step 'a')"],
    ),
    (
        "trigger.yaml",
        "name: x\nsteps: [{id: a, tool: t, trigger: sometimes}]\n",
        # One line: the step, the field, and every valid rule.
        ["step 'a'", "trigger", "'all_success'", "'none_failed_min_one_success'", "'always'"],
    ),
    ("unknown-top.yaml", "name: x\nsteps: []\nbogus: 1\n", ["bogus", "unknown field"]),
    (
        "unknown-step.json",
        '{"name": "x", "steps": [{"id": "a", "tool": "t", "inptus": {}}]}',
        ["steps.0.inptus (step 'a')", "unknown field"],
    ),
    (
        "unknown-retry.yaml",
        "name: x\nsteps: [{id: a, tool: t, retry: {max_attempts: 2, tries: 3}}]\n",
        ["retry.tries", "unknown field"],
    ),
    ("duplicate-key.yaml", "name: x\nname: y\nsteps: []\n", ["duplicate key 'name'", "line 2"]),
    ("duplicate-key.json", '{"name": "x", "steps": [], "name": "y"}', ["duplicate key 'name'"]),
    ("non-string-key.yaml", "name: x\nsteps: []\n1: 2\n", ["key 1 is not a string"]),
    ("alias-bomb.yaml", ALIAS_BOMB, ["alias", f"more than {MAX_NODES}", "line"]),
    ("merge-bomb.yaml", MERGE_BOMB, ["alias", f"more than {MAX_NODES}"]),
    ("recursive-alias.yaml", "name: x\nsteps: []\noutput: &a [1, *a]\n", ["alias *a", "recursive"]),
    ("recursive-map.yaml", "name: x\nsteps: []\noutput: &a {k: *a}\n", ["recursive"]),
    ("undefined-alias.yaml", "name: x\nsteps: []\noutput: *nope\n", ["undefined alias"]),
    ("duplicate-anchor.yaml", "name: x\nsteps: []\noutput: [&a 1, &a 2]\n", ["duplicate anchor"]),
    ("big.yaml", "name: x\nsteps: []\ndescription: " + "a" * (10 * 1024 * 1024) + "\n", ["larger"]),
    ("big.json", b'{"name": "x", "description": "' + b"a" * (10 * 1024 * 1024) + b'"}', ["larger"]),
    ("just-over.yaml", "#" * (MAX_BYTES + 1), ["larger", f"{MAX_BYTES // 1024} kib"]),
    ("long-string.yaml", "name: x\nsteps: []\ndescription: " + "a" * 100_000, ["100000 char"]),
    ("5000-steps.json", _steps_json(5000), ["5000 steps", f"{MAX_STEPS}-step limit"]),
    ("5000-steps.yaml", _steps_yaml(5000), ["5000 steps", f"{MAX_STEPS}-step limit"]),
    (
        "many-values.json",
        '{"name": "x", "steps": [], "output": [' + "1," * 200_000 + "1]}",
        ["more than"],
    ),
    ("many-values.yaml", "name: x\nsteps: []\noutput: [" + "1," * 200_000 + "1]\n", ["more than"]),
    (
        "deep.json",
        '{"name": "x", "steps": [], "output": ' + "[" * 100 + "]" * 100 + "}",
        ["nested deeper"],
    ),
    (
        "very-deep.json",
        '{"name": "x", "steps": [], "output": ' + "[" * 200_000 + "]" * 200_000 + "}",
        ["nested deeper"],
    ),
    (
        "deep.yaml",
        "name: x\nsteps: []\noutput: " + "[" * 100 + "]" * 100 + "\n",
        ["nested deeper", "line 3"],
    ),
    (
        "very-deep.yaml",
        "name: x\nsteps: []\noutput: " + "[" * 200_000 + "]" * 200_000 + "\n",
        ["nest", "deep"],
    ),
    (
        "deep-map.yaml",
        "name: x\nsteps: []\noutput: " + "{a: " * 100 + "1" + "}" * 100 + "\n",
        ["nested deeper"],
    ),
    (
        "deep-block.yaml",
        "name: x\nsteps: []\noutput:\n" + "".join("  " * i + "- \n" for i in range(100)),
        ["nested deeper"],
    ),
    (
        "deep-alias.yaml",
        "name: x\nsteps: []\na: &a "
        + "[" * 25
        + "]" * 25
        + "\noutput: "
        + "[" * 25
        + "*a"
        + "]" * 25
        + "\n",
        ["alias *a", f"deeper than {MAX_DEPTH}"],
    ),
    ("latin1.yaml", "name: café\nsteps: []\n".encode("latin-1"), ["not utf-8", "byte 9"]),
    ("latin1.json", '{"name": "café", "steps": []}'.encode("latin-1"), ["not utf-8"]),
    ("binary-junk.yaml", bytes(range(256)), ["not utf-8"]),
    ("utf16.json", '{"name": "x", "steps": []}'.encode("utf-16"), ["not utf-8"]),
    ("nul.yaml", b"name: x\x00\nsteps: []\n", ["invalid yaml", "#x0000"]),
    ("control.yaml", "name: x\x07\nsteps: []\n", ["invalid yaml", "#x0007"]),
    (
        "huge-int.yaml",
        "name: x\nsteps: []\noutput: " + "9" * 5000 + "\n",
        ["invalid yaml", "integer"],
    ),
    (
        "huge-int.json",
        '{"name": "x", "steps": [], "output": ' + "9" * 5000 + "}",
        ["invalid json", "digits"],
    ),
    ("toml.toml", 'name = "x"\n[[steps]]\nid = "a"\n', ["must be a mapping", "not a string"]),
]


def _load_bad(path: Path | str) -> FlowValidationError:
    start = time.perf_counter()
    try:
        load_flow(path)
    except FlowValidationError as exc:
        elapsed = time.perf_counter() - start
        error = exc
    else:  # pragma: no cover - the assertion below reports it
        pytest.fail(f"{path} loaded without error")
    assert type(error) is FlowValidationError
    assert elapsed < 1.0, f"{path} took {elapsed:.2f}s"
    assert error.source == str(path)
    message = str(error)
    assert message.startswith(f"{path}: ")
    assert "Traceback" not in message
    # Raised `from None`: no parser exception is chained into what users see.
    assert error.__cause__ is None
    assert error.__suppress_context__ or error.__context__ is None
    return error


@pytest.mark.parametrize(("name", "content", "fragments"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_file_gives_one_clear_flow_validation_error(tmp_path, name, content, fragments):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    error = _load_bad(path)
    message = str(error).lower()
    for fragment in fragments:
        assert fragment.lower() in message, (fragment, str(error))
    assert len(str(error)) < 2000  # a readable message, not a dump of the file


def test_python_tags_never_run_anything(tmp_path):
    marker = tmp_path / "pwned"
    payloads = [
        f'!!python/object/apply:os.system ["touch {marker}"]',
        f'name: !!python/object/apply:os.system ["touch {marker}"]\nsteps: []',
        f"name: x\nsteps: []\noutput: !!python/object/apply:subprocess.call [[touch, {marker}]]",
        f'name: x\nsteps: []\noutput: !!python/object/new:os.system ["touch {marker}"]',
        f"output: !!python/object/apply:builtins.exec [\"open('{marker}', 'w')\"]",
    ]
    for i, payload in enumerate(payloads):
        path = tmp_path / f"p{i}.yaml"
        path.write_text(payload + "\n")
        error = _load_bad(path)
        assert "unsupported YAML tag" in str(error)
        with pytest.raises(FlowValidationError):
            Flow.from_yaml(payload)
    assert not marker.exists()


def test_missing_file(tmp_path):
    path = tmp_path / "nope.yaml"
    error = _load_bad(path)
    assert "no such file" in str(error)


def test_directory(tmp_path):
    error = _load_bad(tmp_path)
    assert "directory" in str(error)


def test_unreadable_paths(tmp_path):
    error = _load_bad(str(tmp_path / "a\x00b.yaml"))
    assert "invalid path" in str(error)
    error = _load_bad(str(tmp_path / ("x" * 5000 + ".yaml")))
    assert "cannot read" in str(error)
    error = _load_bad(tmp_path / "not-a-dir.yaml" / "flow.yaml")
    assert "no such file" in str(error) or "cannot read" in str(error)


def test_problems_list_each_problem_of_a_file(tmp_path):
    path = tmp_path / "many.yaml"
    path.write_text(
        "name: x\nsteps:\n"
        "  - {id: a, tool: t, timeout: -1}\n"
        "  - {id: b, tool: t, bogus: 1}\n"
        "  - {tool: t}\n"
    )
    error = _load_bad(path)
    assert len(error.problems) == 3
    assert any("steps.0.timeout (step 'a')" in p for p in error.problems)
    assert any("steps.1.bogus (step 'b'): unknown field" in p for p in error.problems)
    assert any("steps.2.id: Field required" in p for p in error.problems)
    assert "3 problems" in str(error)


def test_text_apis_give_the_same_errors_with_their_source():
    with pytest.raises(FlowValidationError) as info:
        Flow.from_yaml("name: x\nsteps: [\n", source="inline.yaml")
    assert str(info.value).startswith("inline.yaml: invalid YAML")
    with pytest.raises(FlowValidationError) as info:
        Flow.from_json("{", source="inline.json")
    assert str(info.value).startswith("inline.json: invalid JSON")
    with pytest.raises(FlowValidationError) as info:
        Flow.from_yaml("[1]")
    assert info.value.source == "<yaml>"
    with pytest.raises(FlowValidationError, match="not valid Unicode"):
        Flow.from_yaml("name: \udc80\nsteps: []\n")
    with pytest.raises(FlowValidationError, match="larger"):
        Flow.from_json("x" * (MAX_BYTES + 1))


def test_loading_does_not_validate_references():
    # Loading checks the file and the model; references and tools are validate()'s job.
    flow = Flow.from_yaml("name: x\nsteps: [{id: a, tool: t, inputs: {v: $steps.ghost}}]\n")
    with pytest.raises(FlowValidationError, match="unknown step 'ghost'"):
        flow.validate()


# --- without libyaml ---------------------------------------------------------------------

PURE_PYTHON_CASES = [
    c
    for c in BAD_FILES
    if c[0].endswith(".yaml") and not c[0].startswith(("many-values", "5000-steps"))
]


@pytest.mark.parametrize(
    ("name", "content", "fragments"), PURE_PYTHON_CASES, ids=[c[0] for c in PURE_PYTHON_CASES]
)
def test_pure_python_yaml_parser_gives_the_same_kind_of_errors(
    tmp_path, monkeypatch, name, content, fragments
):
    # PyYAML built without libyaml parses events in Python; the limits are the same.
    monkeypatch.setattr(yaml_limits, "_LOADER", yaml_limits._PyLoader)
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    error = _load_bad(path)
    message = str(error).lower()
    if name in ("nul.yaml", "control.yaml"):  # PyYAML's reader words it differently
        fragments = ["invalid yaml", fragments[1]]
    if name == "very-deep.yaml":
        fragments = ["nested deeper"]
    for fragment in fragments:
        assert fragment.lower() in message, (fragment, str(error))


def test_pure_python_yaml_parser_round_trips(monkeypatch):
    monkeypatch.setattr(yaml_limits, "_LOADER", yaml_limits._PyLoader)
    assert Flow.from_yaml(RICH.to_yaml()) == RICH


def test_libyaml_is_used_when_available():
    if not getattr(yaml, "__with_libyaml__", False):
        pytest.skip("PyYAML without libyaml")
    assert yaml_limits._LOADER is not yaml_limits._PyLoader
