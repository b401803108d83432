"""Parse YAML into plain data while remembering the line of every key.

PyYAML's loaders drop node marks and silently keep the last of two equal keys, so a category
written with `region: upper` and later `region: lower` would load as `region: lower` and nobody
would know. Policy errors must name a file, a line and a field, so this module composes the node
graph (which keeps marks), rejects duplicate keys, and builds plain dicts and lists together with
a map from each key path to the line it was written on.

Aliases (``*name``) are refused, not expanded: composing is linear in the text, but expanding a
node graph whose aliases nest ("billion laughs") is exponential, so a 10 KB file could ask for
gigabytes. A policy has no need to share nodes; the error names the alias's line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

KeyPath = tuple[str | int, ...]
"""Where a value sits in the document: mapping keys and sequence indexes from the root."""

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_MERGE_TAG = "tag:yaml.org,2002:merge"
_KEY_TAGS = {
    f"tag:yaml.org,2002:{name}" for name in ("str", "int", "float", "bool", "null", "timestamp")
}


@dataclass(frozen=True)
class YamlProblem:
    """A structural problem found while building the data (duplicate key, unsupported tag...)."""

    path: KeyPath
    line: int
    message: str


class YamlSyntaxError(Exception):
    """The text is not YAML; `line` is 1-based, None when the parser gave no position."""

    def __init__(self, line: int | None, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


@dataclass
class LocatedYaml:
    """Plain data plus where each key was written and what was wrong with the structure."""

    data: object
    lines: dict[KeyPath, int] = field(default_factory=dict)
    problems: list[YamlProblem] = field(default_factory=list)

    def line_of(self, path: KeyPath) -> int:
        """Line of `path`, or of its nearest written ancestor (a missing field has no line)."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return 1


def format_path(path: KeyPath) -> str:
    """Dotted field name for messages: `rules.R1.verdicts.upper_leg`, `items[2]`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
            continue
        text = f'"{part}"' if (not part or "." in part or part != part.strip()) else part
        out = f"{out}.{text}" if out else text
    return out


def first_alias_line(text: str) -> int | None:
    """The 1-based line of the text's first alias (``*name``), None when it has none.

    For files read with ``yaml.safe_load`` (run configs): PyYAML shares an aliased object rather
    than copying it, but whatever walks the result afterwards (validation, ``json.dumps``)
    expands it, so nested aliases are refused before loading. Syntax errors are left to the
    loader that follows, which reports them with its own position.
    """
    try:
        for event in yaml.parse(text, Loader=_LOADER):
            if isinstance(event, yaml.AliasEvent):
                return event.start_mark.line + 1
    except yaml.YAMLError:
        return None
    return None


def load_located(text: str) -> LocatedYaml:
    """Parse one YAML document; raise `YamlSyntaxError` when the text does not parse."""
    try:
        root = yaml.compose(text, Loader=_LOADER)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        message = exc.problem or "invalid YAML"
        if exc.context:
            message = f"{message} ({exc.context})"
        raise YamlSyntaxError(mark.line + 1 if mark else None, message) from exc
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise YamlSyntaxError(line, f"unacceptable character #x{exc.character:04x}") from exc
    except yaml.YAMLError as exc:  # pragma: no cover - other parser errors carry no mark
        raise YamlSyntaxError(None, str(exc)) from exc
    located = LocatedYaml(data=None)
    if root is None:
        return located
    located.lines[()] = root.start_mark.line + 1
    located.data = _Builder(located).build(root, ())
    return located


class _Builder:
    """Turns composed nodes into dicts, lists and scalars, recording lines and problems."""

    def __init__(self, located: LocatedYaml) -> None:
        self.located = located
        self.constructor = yaml.constructor.SafeConstructor()
        # every node already built: meeting one again means an alias (the composer hands the
        # anchored node itself), refused before it could be expanded
        self.built: set[int] = set()

    def problem(self, path: KeyPath, node: Node, message: str) -> None:
        self.located.problems.append(YamlProblem(path, node.start_mark.line + 1, message))

    def build(self, node: Node, path: KeyPath, line: int | None = None) -> object:
        """``line``: where the reference to ``node`` was written (an alias's own position is
        not kept by the composer: its key's line, or where its list item starts)."""
        if id(node) in self.built:
            message = (
                "YAML aliases ('*name') are not supported: write the value out "
                f"(its anchor is on line {node.start_mark.line + 1})"
            )
            at = line if line is not None else node.start_mark.line + 1
            self.located.problems.append(YamlProblem(path, at, message))
            return None
        self.built.add(id(node))
        if isinstance(node, ScalarNode):
            return self.scalar(node, path)
        if isinstance(node, SequenceNode):
            return self.sequence(node, path)
        if isinstance(node, MappingNode):
            return self.mapping(node, path)
        raise TypeError(f"unexpected YAML node {node!r}")  # pragma: no cover

    def scalar(self, node: ScalarNode, path: KeyPath) -> object:
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            self.problem(path, node, exc.problem or f"cannot read value with tag {node.tag}")
            return None

    def sequence(self, node: SequenceNode, path: KeyPath) -> list[object]:
        if node.tag != _SEQ_TAG:
            self.problem(path, node, f"unsupported tag {node.tag}")
        items: list[object] = []
        after = node.start_mark  # an aliased item is written after the item before it
        for index, item in enumerate(node.value):
            self.located.lines[(*path, index)] = item.start_mark.line + 1
            alias = id(item) in self.built
            items.append(self.build(item, (*path, index), after.line + 1))
            if not alias:
                after = item.end_mark
        return items

    def mapping(self, node: MappingNode, path: KeyPath) -> dict[str, object]:
        if node.tag != _MAP_TAG:
            self.problem(path, node, f"unsupported tag {node.tag}")
        result: dict[str, object] = {}
        first_line: dict[str, int] = {}
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                self.problem(path, key_node, "merge keys ('<<') are not supported: write it out")
                continue
            if not isinstance(key_node, ScalarNode):
                self.problem(path, key_node, "keys must be plain scalars, not lists or mappings")
                continue
            if key_node.tag not in _KEY_TAGS:
                self.problem(path, key_node, f"unsupported tag {key_node.tag} on a key")
                continue
            key = str(key_node.value)
            line = key_node.start_mark.line + 1
            if key in first_line:
                self.problem(
                    (*path, key),
                    key_node,
                    f"duplicate key '{key}' (first defined at line {first_line[key]}); "
                    "YAML would silently keep only one of them",
                )
                continue
            first_line[key] = line
            self.located.lines[(*path, key)] = line
            result[key] = self.build(value_node, (*path, key), line)
        return result
