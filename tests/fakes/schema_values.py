"""Build a minimal instance that validates against a JSON schema (what a perfect model would write).

The fake servers' default responder uses it, so a test or benchmark that does not script answers
still gets schema-valid structured output for whatever schema the request carried.
"""

from __future__ import annotations

from typing import Any


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ValueError(f"only local $refs are supported, got {ref}")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def example_from_schema(node: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """A small value valid for ``node`` (supports the subset pydantic emits)."""
    root = root if root is not None else node
    node = _resolve(node, root)
    if "const" in node:
        return node["const"]
    if "enum" in node:
        return node["enum"][0]
    if "default" in node:
        return node["default"]
    for key in ("anyOf", "oneOf", "allOf"):
        if key in node:
            options = [o for o in node[key] if _resolve(o, root).get("type") != "null"]
            return example_from_schema((options or node[key])[0], root)
    kind = node.get("type", "object")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = node.get("properties", {})
        required = node.get("required", list(props))
        return {name: example_from_schema(props[name], root) for name in props if name in required}
    if kind == "array":
        count = max(1, node.get("minItems", 1))
        if "maxItems" in node:
            count = min(count, node["maxItems"])
        return [example_from_schema(node.get("items", {}), root) for _ in range(count)]
    if kind == "string":
        return "x" * max(1, node.get("minLength", 1))
    if kind == "integer":
        return int(node.get("minimum", 0))
    if kind == "number":
        return float(node.get("minimum", 0.0))
    if kind == "boolean":
        return True
    return None
