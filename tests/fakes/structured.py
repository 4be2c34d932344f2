"""The fake provider server's structured answers: a JSON value built from the request's schema.

`structured_answer(schema, user_text)` fills every required property with a value of its type,
derived from the last user turn, so tests can predict it: a string is `make_reply(user_text)`,
an integer (and a number) the count of the turn's words, a boolean true, an array one item, an
enum its first value. `$ref`s into `$defs` / `definitions` are followed; of `anyOf` / `oneOf`
the first option that is neither null nor a reference is taken (so recursive models end).

The faults `invalid_json` and `wrong_type` (FakeProviderServer.fail_next) make the answer prose
instead of JSON, or the same object with every integer, number and boolean in it a word.
"""

from __future__ import annotations

import json
from typing import Any

NOT_JSON = "Sure! Here is the information you asked for."
WRONG = "many"  # what `wrong_type` puts where a number or boolean belongs


def structured_answer(schema: dict[str, Any], user_text: str) -> Any:
    """The value the fake model answers a request for JSON of `schema` with."""
    return _value(schema, schema, user_text)


def answer_text(schema: dict[str, Any], user_text: str, fault: str | None = None) -> str:
    """The answer's text as the provider sends it, with the structured fault `fault` if any."""
    if fault == "invalid_json":
        return NOT_JSON
    value = structured_answer(schema, user_text)
    if fault == "wrong_type":
        value = _wrong(value)
    return json.dumps(value)


def _value(schema: Any, root: dict[str, Any], user_text: str) -> Any:
    from tests.fakes.provider_server import make_reply  # that module imports this one

    if not isinstance(schema, dict):
        return None
    if "$ref" in schema:
        return _value(_resolve(schema["$ref"], root), root, user_text)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf", "allOf"):
        if options := schema.get(key):
            plain = [o for o in options if "$ref" not in o and o.get("type") != "null"]
            return _value((plain or options)[0], root, user_text)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        properties = schema.get("properties") or {}
        required = schema.get("required") or []
        return {name: _value(properties[name], root, user_text) for name in required}
    if kind == "array":
        return [_value(schema.get("items") or {}, root, user_text)]
    if kind == "integer":
        return len(user_text.split())
    if kind == "number":
        return float(len(user_text.split()))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return make_reply(user_text)


def _resolve(ref: str, root: dict[str, Any]) -> Any:
    node: Any = root
    for step in ref.removeprefix("#/").split("/"):
        node = node[step]
    return node


def _wrong(value: Any) -> Any:
    if isinstance(value, dict):
        return {name: _wrong(item) for name, item in value.items()}
    if isinstance(value, list):
        return [_wrong(item) for item in value]
    if isinstance(value, bool | int | float):
        return WRONG
    return value
