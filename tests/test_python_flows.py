"""`@flow`: Python flows build the same `Flow` as YAML, and catch mistakes as they are built."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from executor import (
    Flow,
    FlowExecutor,
    FlowValidationError,
    RetryPolicy,
    Step,
    ToolRegistry,
    flow,
    index,
    item,
)

reg = ToolRegistry()


class User(BaseModel):
    id: int
    name: str
    tags: list[str]


class Page(BaseModel):
    url: str
    size: int


class Options(BaseModel):
    label: str
    repeat: int = 1


@reg.tool
def fetch_user(user_id: int) -> User:
    return User(id=user_id, name=f"user{user_id}", tags=["a", "b"])


@reg.tool
def greet(name: str, punctuation: str = "!") -> str:
    return f"hello {name}{punctuation}"


@reg.tool
def double(x: int) -> int:
    return 2 * x


@reg.tool
def pages(n: int) -> list[Page]:
    return [Page(url=f"https://x/{i}", size=10 * i) for i in range(n)]


@reg.tool
def anything(value: Any = None) -> Any:
    return value


@reg.tool(name="ns.weird-name")
def weird() -> int:
    return 1


def test_a_flow_is_the_flow_its_yaml_says() -> None:
    @flow(version="2", on_failure="continue", timeout=30)
    def greeting(user_id: int, punctuation: str = "?"):
        """Greet a user."""
        u = fetch_user(user_id)  # positional arguments bind by name
        return {"text": greet(name=u.name, punctuation=punctuation), "first_tag": u.tags[0]}

    assert greeting == Flow.from_yaml(
        """
        name: greeting
        version: "2"
        description: Greet a user.
        input:
          type: object
          properties:
            user_id: {type: integer}
            punctuation: {type: string, default: "?"}
          required: [user_id]
          additionalProperties: false
        on_failure: continue
        timeout: 30
        steps:
          - {id: fetch_user, tool: fetch_user, inputs: {user_id: $input.user_id}}
          - id: greet
            tool: greet
            inputs: {name: $steps.fetch_user.name, punctuation: $input.punctuation}
        output: {text: $steps.greet, first_tag: $steps.fetch_user.tags.0}
        """
    )
    assert Flow.from_yaml(greeting.to_yaml()) == greeting
    assert Flow.from_json(greeting.to_json()) == greeting


def test_step_ids_follow_tool_names_and_repeats_are_numbered() -> None:
    @flow
    def repeats(x: int):
        a = double(x)
        b = double(a)
        c = double.options(id="double_3")(b)  # taken explicitly: the next one skips it
        d = double(c)
        weird()
        return d

    assert [s.id for s in repeats.steps] == [
        "double",
        "double_2",
        "double_3",
        "double_4",
        "ns_weird-name",
    ]
    assert repeats.steps[1].inputs == {"x": "$steps.double"}
    assert repeats.output == "$steps.double_4"


def test_options_set_every_step_field() -> None:
    policy = RetryPolicy(max_attempts=3, backoff=0.5)

    @flow
    def opts(user_id: int):
        u = fetch_user.options(id="u", queue="io", timeout=2.5, retry=policy)(user_id=user_id)
        greet.options(
            id="g",
            when="steps.u.id > 0",
            trigger="none_failed",
            description="the greeting",
            depends_on=[u, "u"],
        )(name="literal $5 and $$")
        return greet.options(depends_on=["g"])(name="$input.user_id")  # a literal, not a reference

    u, g, last = opts.steps
    assert (u.queue, u.timeout, u.retry) == ("io", 2.5, policy)
    assert (g.when, g.trigger, g.description, g.depends_on) == (
        "steps.u.id > 0",
        "none_failed",
        "the greeting",
        ["u", "u"],
    )
    # Literal strings starting with '$' are escaped, so they stay text.
    assert g.inputs == {"name": "literal $5 and $$"}  # '$' inside is no reference
    assert last.inputs == {"name": "$$input.user_id"}
    assert last.depends_on == ["g"]


def test_a_literal_dollar_string_reaches_the_tool_unchanged() -> None:
    @flow
    def money():
        return greet(name="$5", punctuation="$$")

    with FlowExecutor(registry=reg) as ex:
        assert ex.run(money).output == "hello $5$$"


def test_map_calls_the_tool_per_item_with_item_and_index() -> None:
    @flow
    def sizes(n: int):
        ps = pages(n)
        doubled = double.map(ps, x=item.size)
        both = anything.map(ps, value={"i": index, "url": item.url})
        return {"doubled": doubled, "both": both}

    m = sizes.step("double")
    assert (m.map, m.inputs) == ("$steps.pages", {"x": "$item.size"})
    with FlowExecutor(registry=reg) as ex:
        result = ex.run(sizes, {"n": 3})
    assert result.output == {
        "doubled": [0, 20, 40],
        "both": [{"i": i, "url": f"https://x/{i}"} for i in range(3)],
    }


def test_step_accepts_a_tool_object() -> None:
    assert Step(id="g", tool=greet, inputs={"name": "x"}).tool == "greet"


def test_calling_a_tool_outside_a_flow_calls_the_function() -> None:
    assert double(4) == 8
    assert fetch_user(2).name == "user2"


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            lambda uid: fetch_user(uid).nmae,
            "fetch_user.nmae: the output of step 'fetch_user' (tool 'fetch_user') has no "
            "field 'nmae' (fields: id, name, tags)",
        ),
        (lambda uid: fetch_user(uid).name.first, "has no field 'first' (it is a string)"),
        (
            lambda uid: double(x=fetch_user(uid).name),
            "input 'x' = $steps.fetch_user.name: a string cannot be parameter 'x' of tool "
            "'double' (integer)",
        ),
        (lambda uid: double(x=fetch_user(uid)), "an object cannot be parameter 'x'"),
        (
            lambda uid: double.map(pages(uid), x=item.url),
            "a string cannot be parameter 'x' of tool 'double'",
        ),
        (
            lambda uid: double.map(pages(uid), x=item.sise),
            "the map item has no field 'sise' (fields: url, size)",
        ),
        (lambda uid: double(x=item), "$item is only for tool.map(...) inputs"),
        (
            lambda uid: double.map(uid, x=item),
            None,
        ),  # mapping over an int: the item is unknown, runs fail
        (lambda uid: double.map([1, 2], x=item), "map over a reference to a list"),
        (
            lambda uid: greet(nme="x"),
            "tool 'greet': missing required input 'name'; unknown input 'nme' "
            "(parameters: name, punctuation)",
        ),
        (lambda uid: greet(), "tool 'greet': missing required input 'name'"),
        (lambda uid: double(1, 2), "tool 'double' takes 1 inputs (x); 2 were given"),
        (lambda uid: greet.options(retires=3)(name="x"), "unknown step option 'retires'"),
        (lambda uid: greet.options(trigger="sometimes")(name="x"), "option trigger:"),
        (
            lambda uid: [greet.options(id="g")(name="a"), greet.options(id="g")(name="b")],
            "step id 'g' is used twice",
        ),
        (lambda uid: greet(name=object()), "'object' is not a JSON value or a reference"),
    ],
)
def test_mistakes_are_one_line_naming_the_flow_the_tool_and_the_field(
    body: Any, message: str | None
) -> None:
    def build() -> Flow:
        @flow(name="wrong")
        def wrong(uid: int):
            return body(uid)

        return wrong

    if message is None:
        build()
        return
    with pytest.raises(FlowValidationError) as caught:
        build()
    text = str(caught.value)
    assert message in text and text.startswith("flow 'wrong': ") and "\n" not in text


def test_a_reference_has_no_value_while_the_flow_is_built() -> None:
    with pytest.raises(TypeError, match="when="):

        @flow
        def branchy(uid: int):
            if fetch_user(uid).id:
                return None
            return None

    with pytest.raises(TypeError, match=r"tool.map"):

        @flow
        def loopy(n: int):
            return [double(x=p.size) for p in pages(n)]


def test_options_and_map_outside_a_flow_say_where_they_belong() -> None:
    with pytest.raises(FlowValidationError, match="only works inside a @flow function"):
        greet.options(id="g")(name="x")
    with pytest.raises(FlowValidationError, match="only works inside a @flow function"):
        double.map([1], x=item)


def test_flow_functions_take_named_parameters_and_are_not_async() -> None:
    with pytest.raises(FlowValidationError, match=r"no \*args"):

        @flow
        def star(*xs: int):
            return None

    with pytest.raises(FlowValidationError, match="not async"):

        @flow
        async def coro(x: int):
            return None


def test_the_signature_is_the_input_schema_checked_before_any_step_runs(tmp_path: Any) -> None:
    called: list[int] = []
    local = ToolRegistry()

    @local.tool
    def record(n: int, label: str) -> int:
        called.append(n)
        return n

    @flow
    def checked(n: int, options: Options, scale: float = 1.0):
        return record(n=n, label=options.label)

    assert checked.input is not None and checked.input["required"] == ["n", "options"]
    with FlowExecutor(registry=local) as ex:
        with pytest.raises(FlowValidationError) as caught:
            ex.run(checked, {"n": "three", "options": {"label": 1}, "extra": True})
        assert caught.value.problems == [
            "input: unknown field 'extra' (fields: n, options, scale)",
            "input.n: expected integer, got string",
            "input.options.label: expected string, got integer",
        ]
        with pytest.raises(FlowValidationError, match="'options' is required"):
            ex.submit(checked, {"n": 1})
        assert called == []  # nothing ran
        result = ex.run(checked, {"n": 2, "options": {"label": "x"}})
        assert result.output == 2 and result.inputs == {
            "n": 2,
            "options": {"label": "x"},
            "scale": 1.0,  # defaults filled in, as the run saw them
        }
