"""The runner side of contract/runner-protocol.schema.json, the one Node ↔ runner contract (docs/runner-protocol.md).

A small checker for the JSON Schema keywords that file uses, so a bad request field is answered with INVALID_REQUEST
naming the field, without a jsonschema dependency. Standard library only, on purpose: __main__ builds its argument
parser from the schema before fd 1 is safe to print on.
"""

from __future__ import annotations

import json
import math
import re
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "contract" / "runner-protocol.schema.json"

# Keywords that only describe; the checker skips them.
ANNOTATIONS = frozenset({"$schema", "$id", "$defs", "$comment", "title", "description", "default", "examples"})
# Keywords the checker enforces. A schema keyword in neither set is a test failure (test_contract.py), so the schema
# cannot quietly grow a rule this checker would ignore.
ASSERTIONS = frozenset(
    {
        "$ref",
        "type",
        "enum",
        "const",
        "anyOf",
        "allOf",
        "if",
        "then",
        "else",
        "properties",
        "required",
        "additionalProperties",
        "dependentRequired",
        "items",
        "minItems",
        "maxItems",
        "minimum",
        "maximum",
        "multipleOf",
        "minLength",
        "pattern",
    }
)


class ContractError(ValueError):
    """A value that breaks the contract; `path` names the field (e.g. `params.pixel.fitMode`)."""

    def __init__(self, path: str, message: str):
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path


@cache
def schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as fh:
        return json.load(fh)


def definition(name: str) -> dict:
    return schema()["$defs"][name]


def validate(name: str, value: Any, path: str = "") -> None:
    """Raise ContractError for the first way `value` breaks the `$defs` entry `name`."""
    _check(definition(name), value, path)


def validate_result(op: str, payload: Any) -> None:
    """Check the payload of a result line (its fields besides id and event) for `op` (RunnerOps in the schema)."""
    ref = definition("RunnerOps")["properties"][op]["$ref"]
    result_ref = _resolve(ref)["properties"]["result"]["$ref"]
    _check(_resolve(result_ref), payload, "")


def validate_event(event: dict, op: str | None = None) -> None:
    """Check one protocol line the runner writes; a result line is checked against `op`'s payload when given."""
    _check(definition("RunnerEvent"), event, "")
    if event.get("event") == "result" and op is not None:
        validate_result(op, {k: v for k, v in event.items() if k not in ("id", "event")})


def _resolve(ref: str) -> dict:
    prefix = "#/$defs/"
    if not ref.startswith(prefix):
        raise ValueError(f"only local $defs references are supported, got {ref!r}")
    return definition(ref[len(prefix) :])


def _describe(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False) if _jsonable(value) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _jsonable(value: Any) -> bool:
    try:
        json.dumps(value)
        return True
    except (TypeError, ValueError):
        return False


def _is_type(value: Any, name: str) -> bool:
    if name == "null":
        return value is None
    if name == "boolean":
        return isinstance(value, bool)
    if name == "string":
        return isinstance(value, str)
    if name == "object":
        return isinstance(value, dict)
    if name == "array":
        return isinstance(value, list)
    if isinstance(value, bool):
        return False  # JSON booleans are not numbers, although Python's bool is an int
    if name == "integer":
        return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value) and value.is_integer())
    if name == "number":
        return isinstance(value, (int, float)) and math.isfinite(value)
    raise ValueError(f"unknown JSON Schema type {name!r}")


def _equal(a: Any, b: Any) -> bool:
    # JSON equality: false is not 0, 1.0 is 1.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _expected(node: dict) -> str:
    """A short human description of what `node` accepts, for error messages."""
    if "$ref" in node:
        return _expected(_resolve(node["$ref"]))
    if "const" in node:
        return _describe(node["const"])
    if "enum" in node:
        return "one of " + ", ".join(_describe(v) for v in node["enum"])
    if "anyOf" in node:
        return " or ".join(_expected(branch) for branch in node["anyOf"])
    types = node.get("type")
    if isinstance(types, list):
        return " or ".join(types)
    return types or "a value"


def _check(node: dict, value: Any, path: str) -> None:
    if "$ref" in node:
        _check(_resolve(node["$ref"]), value, path)
    types = node.get("type")
    if types is not None:
        names = types if isinstance(types, list) else [types]
        if not any(_is_type(value, t) for t in names):
            raise ContractError(path, f"expected {' or '.join(names)}, got {_describe(value)}")
    if "const" in node and not _equal(value, node["const"]):
        raise ContractError(path, f"must be {_describe(node['const'])}, got {_describe(value)}")
    if "enum" in node and not any(_equal(value, option) for option in node["enum"]):
        raise ContractError(path, f"must be {_expected(node)}, got {_describe(value)}")
    if "anyOf" in node:
        _check_any_of(node, value, path)
    for branch in node.get("allOf", ()):
        _check(branch, value, path)
    if "if" in node:
        try:
            _check(node["if"], value, path)
            matched = True
        except ContractError:
            matched = False
        follow = node.get("then" if matched else "else")
        if follow is not None:
            _check(follow, value, path)
    if isinstance(value, dict):
        _check_object(node, value, path)
    if isinstance(value, list):
        if len(value) < node.get("minItems", 0) or len(value) > node.get("maxItems", len(value)):
            raise ContractError(path, f"must have {_item_count(node)} items, got {len(value)}")
        for index, item in enumerate(value if "items" in node else ()):
            _check(node["items"], item, f"{path}[{index}]")
    if isinstance(value, str):
        if len(value) < node.get("minLength", 0):
            raise ContractError(path, "must not be empty" if node["minLength"] == 1 else "is too short")
        if "pattern" in node and not re.search(node["pattern"], value):
            raise ContractError(path, f"must match {node['pattern']}, got {_describe(value)}")
    if _is_type(value, "number"):
        if "minimum" in node and value < node["minimum"]:
            raise ContractError(path, f"must be ≥ {node['minimum']}, got {_describe(value)}")
        if "maximum" in node and value > node["maximum"]:
            raise ContractError(path, f"must be ≤ {node['maximum']}, got {_describe(value)}")
        if "multipleOf" in node and value % node["multipleOf"] != 0:
            raise ContractError(path, f"must be a multiple of {node['multipleOf']}, got {_describe(value)}")


def _item_count(node: dict) -> str:
    low, high = node.get("minItems", 0), node.get("maxItems")
    if high is None:
        return f"at least {low}"
    return str(low) if low == high else f"{low} to {high}"


def _check_any_of(node: dict, value: Any, path: str) -> None:
    errors: list[ContractError] = []
    for branch in node["anyOf"]:
        try:
            _check(branch, value, path)
            return
        except ContractError as exc:
            errors.append(exc)
    # A branch that failed below this level (a bad field inside the right kind of object) says more than "expected
    # X or Y"; report it.
    deeper = [e for e in errors if len(e.path) > len(path)]
    if len(deeper) == 1:
        raise deeper[0]
    raise ContractError(path, f"must be {_expected(node)}, got {_describe(value)}")


def _check_object(node: dict, value: dict, path: str) -> None:
    for key in node.get("required", ()):
        if key not in value:
            raise ContractError(_join(path, key), "is required")
    properties = node.get("properties", {})
    extra = node.get("additionalProperties", True)
    for key, item in value.items():
        if key in properties:
            _check(properties[key], item, _join(path, key))
        elif extra is False:
            known = ", ".join(properties) or "none"
            raise ContractError(_join(path, key), f"is not a known field (known: {known})")
        elif isinstance(extra, dict):
            _check(extra, item, _join(path, key))
    for key, needs in node.get("dependentRequired", {}).items():
        if key in value:
            for other in needs:
                if other not in value:
                    raise ContractError(_join(path, other), f"is required together with {key}")


def unknown_keywords(node: Any = None, path: str = "") -> list[str]:
    """Schema keywords this checker neither enforces nor skips (for the drift test)."""
    node = schema() if node is None else node
    found: list[str] = []
    if isinstance(node, dict):
        for key, sub in node.items():
            if key not in ANNOTATIONS and key not in ASSERTIONS:
                found.append(f"{path}/{key}")
            if key in ("properties", "$defs", "dependentRequired"):
                for name, child in sub.items():
                    if key != "dependentRequired":
                        found += unknown_keywords(child, f"{path}/{key}/{name}")
            elif key in ("enum", "const", "default", "required", "examples"):
                continue
            elif isinstance(sub, (dict, list)):
                found += unknown_keywords(sub, f"{path}/{key}")
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found += unknown_keywords(child, f"{path}/{index}")
    return found
