"""The YAML reader for flow files: a safe loader that refuses a hostile file while composing.

PyYAML's `safe_load` builds the whole document before anything can be checked, so an
alias bomb or a deeply nested file costs memory and time first; this loader counts
values (aliases at their full size) and depth as it composes, and stops at the limits.
It is apart from `executor.model.files` because it is YAML machinery: that module decides
what a flow file may hold, this one reads YAML text within the limits and words each
YAML error for the user.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import yaml
import yaml.composer
import yaml.constructor
import yaml.reader
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from executor.errors import FlowValidationError

MAX_DEPTH = 32
MAX_NODES = 100_000


def load_yaml(text: str, source: str) -> Any:
    """The JSON data of one YAML document, within the limits.

    Raises:
        FlowValidationError: one, naming `source` and what is wrong with the text.
    """
    loader: _Limits | None = None
    try:
        _count_values(text)
        loader = _LOADER(text)  # the pure-Python reader checks characters right here
        return loader.get_single_data()
    except _TooLarge as exc:
        raise FlowValidationError(str(exc), source) from None
    except yaml.MarkedYAMLError as exc:
        raise FlowValidationError(
            f"invalid YAML{_where(exc.problem_mark)}: {_what(exc)}", source
        ) from None
    except yaml.reader.ReaderError as exc:
        char = f"#x{exc.character:04x}" if isinstance(exc.character, int) else repr(exc.character)
        raise FlowValidationError(
            f"invalid YAML at character {exc.position + 1}: {exc.reason} {char}", source
        ) from None
    except yaml.YAMLError as exc:
        raise FlowValidationError(f"invalid YAML: {exc}", source) from None
    except RecursionError:
        raise FlowValidationError(f"nested deeper than {MAX_DEPTH} levels", source) from None
    finally:
        if loader is not None:
            loader.dispose()


def _count_values(text: str) -> None:
    """Refuse a file of too many values from libyaml's events alone (cheap), before the
    composer (Python, ~5 µs a value) spends most of a second finding the same. Aliases
    are counted at their full size later, by the composer."""
    if _CParser is None:
        return
    parser = _CParser(text)
    values = 0
    try:
        while True:
            event = parser.get_event()
            kind = type(event)
            if kind is yaml.StreamEndEvent:
                return
            if kind in _VALUE_EVENTS:
                values += 1
                if values > MAX_NODES:
                    where = _where(event.start_mark)
                    raise _TooLarge(
                        f"more than {MAX_NODES} values, the limit for flow files{where}"
                    )
    except yaml.YAMLError:
        return  # the composing pass reports it, with its context
    finally:
        parser.dispose()


_VALUE_EVENTS = (yaml.ScalarEvent, yaml.SequenceStartEvent, yaml.MappingStartEvent)


def _where(mark: Any) -> str:
    if mark is None:
        return ""
    return f" at line {mark.line + 1} column {mark.column + 1}"


def _what(exc: yaml.MarkedYAMLError) -> str:
    context, problem = exc.context, exc.problem
    if problem == "second occurrence" and context:  # the composer's duplicate anchor
        return context.removesuffix("; first occurrence")
    if problem and "could not determine a constructor for the tag" in problem:
        return problem.replace(
            "could not determine a constructor for the tag", "unsupported YAML tag"
        ).replace("'tag:yaml.org,2002:", "'!!")
    return ", ".join(p for p in (context, problem) if p) or "invalid YAML"


class _TooLarge(Exception):
    pass


_MERGE = "tag:yaml.org,2002:merge"


class _Limits(Composer, SafeConstructor, Resolver):
    """A safe loader that composes with limits, so a hostile file costs nothing.

    While composing (before anything is built) it refuses: nesting deeper than
    `MAX_DEPTH`, more than `MAX_NODES` values counting every alias expansion (alias
    bombs), recursive aliases and duplicate keys. It builds only JSON data: timestamps
    stay strings, and `!!binary`, `!!set`, `!!omap`, `!!pairs` and every Python tag are
    refused. Subclasses add the event parser (libyaml's or PyYAML's own).
    """

    if TYPE_CHECKING:  # from the event parser a subclass adds

        def peek_event(self) -> Any: ...

    def _init_limits(self) -> None:
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self._depth = -1  # depth of the node being composed; the document's root is 0
        self._expanded = 0  # values composed so far, aliases counted at their full size
        # Of anchored nodes, once composed: id(node) -> expanded size, levels spanned.
        self._sizes: dict[int, int] = {}
        self._heights: dict[int, int] = {}
        self._below: list[int] = [0]  # per open collection: the tallest child so far

    def dispose(self) -> None:
        pass

    def compose_node(self, parent: Any, index: Any) -> Any:
        event: Any = self.peek_event()
        kind = type(event)
        if kind is yaml.AliasEvent:
            node = super().compose_node(parent, index)
            size = self._sizes.get(id(node))
            if size is None:
                raise _TooLarge(
                    f"alias *{event.anchor}{_where(event.start_mark)} is inside its own "
                    "anchor (a recursive structure)"
                )
            height = self._heights[id(node)]
            if self._depth + height > MAX_DEPTH:
                raise _TooLarge(
                    f"alias *{event.anchor}{_where(event.start_mark)} nests the data "
                    f"deeper than {MAX_DEPTH} levels"
                )
            self._charge(size, event, alias=True)
            if self._below[-1] < height:
                self._below[-1] = height
            return node
        depth = self._depth + 1
        if depth > MAX_DEPTH:
            raise _TooLarge(f"nested deeper than {MAX_DEPTH} levels{_where(event.start_mark)}")
        self._charge(1, event)
        if kind is yaml.ScalarEvent:  # the common case, kept cheap
            node = super().compose_node(parent, index)
            if event.anchor is not None:
                self._sizes[id(node)] = self._heights[id(node)] = 1
            return node
        before = self._expanded - 1
        self._depth = depth
        self._below.append(0)
        collection: Any = super().compose_node(parent, index)
        self._depth = depth - 1
        height = 1 + max(self._below.pop(), 1 if collection.value else 0)
        if self._below and self._below[-1] < height:
            self._below[-1] = height
        if kind is yaml.MappingStartEvent:
            _check_duplicate_keys(collection)
        if event.anchor is not None:  # only anchored nodes can be aliased
            self._heights[id(collection)] = height
            self._sizes[id(collection)] = self._expanded - before
        return collection

    def _charge(self, n: int, event: Any, alias: bool = False) -> None:
        self._expanded += n
        if self._expanded > MAX_NODES:
            where = _where(event.start_mark)
            if alias:
                raise _TooLarge(
                    f"alias *{event.anchor}{where} expands the flow to more than "
                    f"{MAX_NODES} values (a YAML alias bomb?)"
                )
            raise _TooLarge(f"more than {MAX_NODES} values, the limit for flow files{where}")

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        try:
            return int(super().construct_yaml_int(node))
        except ValueError as exc:  # more digits than Python converts
            raise yaml.constructor.ConstructorError(
                None, None, f"bad integer: {exc}", node.start_mark
            ) from None

    def construct_timestamp_as_str(self, node: yaml.ScalarNode) -> str:
        return str(self.construct_scalar(node))

    def construct_unsupported(self, node: yaml.Node) -> Any:
        tag = node.tag.removeprefix("tag:yaml.org,2002:")
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"unsupported YAML tag !!{tag} (a flow holds JSON data: mappings, lists, "
            "strings, numbers, booleans and null)",
            node.start_mark,
        )


_add_constructor: Any = _Limits.add_constructor  # the stubs' TypeVar rejects a subclass
_add_constructor("tag:yaml.org,2002:int", _Limits.construct_yaml_int)
_add_constructor("tag:yaml.org,2002:timestamp", _Limits.construct_timestamp_as_str)
for _tag in ("binary", "set", "omap", "pairs"):
    _add_constructor(f"tag:yaml.org,2002:{_tag}", _Limits.construct_unsupported)


class _PyLoader(_Limits, Reader, Scanner, Parser):
    """With PyYAML's pure-Python event parser (when libyaml is not installed)."""

    def __init__(self, stream: str) -> None:
        Reader.__init__(self, stream)
        Scanner.__init__(self)
        Parser.__init__(self)
        self._init_limits()

    def dispose(self) -> None:
        Parser.dispose(self)


_LOADER: Callable[[str], _Limits] = _PyLoader
_CParser: Any = None
try:  # libyaml's event parser is about ten times faster; composing stays ours
    from yaml._yaml import CParser

    _CParser = CParser

    class _CLoader(_Limits, CParser):
        """With libyaml's event parser."""

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            self._init_limits()

        def dispose(self) -> None:
            CParser.dispose(self)

    _LOADER = _CLoader
except ImportError:  # pragma: no cover - depends on how PyYAML was built
    pass


def _check_duplicate_keys(node: yaml.MappingNode) -> None:
    seen: set[tuple[str, str]] = set()
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode) and key.tag != _MERGE:
            if (key.tag, key.value) in seen:
                raise yaml.composer.ComposerError(
                    "while composing a mapping",
                    node.start_mark,
                    f"found duplicate key {key.value!r}",
                    key.start_mark,
                )
            seen.add((key.tag, key.value))


__all__ = ["MAX_DEPTH", "MAX_NODES", "load_yaml"]
