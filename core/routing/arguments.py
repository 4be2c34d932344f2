"""What a caller may pass to `generate`: checked before any reservation, call or usage row.

A bad argument is the caller's bug, not a provider failure: it raises `TypeError` (wrong kind
of value) or `ValueError` (right kind, out of range) at once, and nothing is held, called or
logged. Before these checks a `user_id="abc"` call succeeded and then its usage row was refused
by the database, taking the rows of other calls in its batch with it.
"""

from __future__ import annotations

import json
from typing import Any

import pydantic

from core.providers.base import Content, Image, Part, Turn
from core.providers.structured import Expected

MAX_OUTPUT_TOKENS_CAP = 128_000  # above every supported model's own output limit
BIGINT_MAX = 2**63 - 1  # ai_provider_usage_logs.user_id is a BIGINT

# The first bytes of each accepted image type (WebP: RIFF....WEBP).
_MAGIC: dict[str, tuple[bytes, ...]] = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
}


def check_call(
    prompt: object, system_prompt: object, user_id: object, max_output_tokens: object
) -> None:
    """Refuse arguments no provider call should be made for."""
    check_text(prompt, "prompt")
    check_options(system_prompt, user_id, max_output_tokens)


def check_text(text: object, what: str) -> None:
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a str, not {type(text).__name__}")
    if not text.strip():
        raise ValueError(f"{what} is empty")


def check_options(system_prompt: object, user_id: object, max_output_tokens: object) -> None:
    """Refuse the options of a call (all but what it sends) that no call should be made with."""
    if system_prompt is not None and not isinstance(system_prompt, str):
        raise TypeError(f"system_prompt must be a str or None, not {type(system_prompt).__name__}")
    if user_id is not None:
        if not _is_int(user_id):
            raise TypeError(f"user_id must be an int or None, not {type(user_id).__name__}")
        if not -BIGINT_MAX - 1 <= user_id <= BIGINT_MAX:  # type: ignore[operator]
            raise ValueError("user_id is out of range (a 64-bit signed integer)")
    if not _is_int(max_output_tokens):
        raise TypeError(f"max_output_tokens must be an int, not {type(max_output_tokens).__name__}")
    if not 1 <= max_output_tokens <= MAX_OUTPUT_TOKENS_CAP:  # type: ignore[operator]
        raise ValueError(
            f"max_output_tokens must be between 1 and {MAX_OUTPUT_TOKENS_CAP:,}"
            f" (got {max_output_tokens})"
        )


ROLES = ("user", "assistant")
PART_TYPES = ("text", "image")
PART_KEYS = {"text": {"type", "text"}, "image": {"type", "data", "mime_type"}}


def conversation(prompt: object, messages: object) -> tuple[Content, tuple[Turn, ...]]:
    """(the prompt to answer, the turns before it) from `prompt=` or `messages=`: exactly one
    of them. `messages` is a non-empty list of {"role": "user" | "assistant", "content": ...},
    the last from the user (the one the answer answers). A content is a str, or a list of parts
    in order: {"type": "text", "text": str} and, in the user's turns only, {"type": "image",
    "data": bytes, "mime_type": "image/png"} (checked like check_image)."""
    if messages is None:
        check_text(prompt, "prompt")
        return prompt, ()  # type: ignore[return-value]
    if prompt is not None:
        raise TypeError("give prompt or messages, not both")
    if not isinstance(messages, list | tuple):
        raise TypeError(f"messages must be a list, not {type(messages).__name__}")
    if not messages:
        raise ValueError("messages is empty")
    turns = []
    for n, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise TypeError(f"messages[{n}] must be a dict with exactly 'role' and 'content'")
        role = message["role"]
        if role not in ROLES:
            raise ValueError(f"messages[{n}]['role'] must be 'user' or 'assistant', not {role!r}")
        turns.append((role, _content(message["content"], role, f"messages[{n}]['content']")))
    if turns[-1][0] != "user":
        raise ValueError("the last message must be the user's (it is the one answered)")
    return turns[-1][1], tuple(turns[:-1])


def _content(content: object, role: str, where: str) -> Content:
    if isinstance(content, str):
        check_text(content, where)
        return content
    if not isinstance(content, list | tuple):
        raise TypeError(f"{where} must be a str or a list of parts, not {type(content).__name__}")
    if not content:
        raise ValueError(f"{where} is empty")
    return tuple(_part(part, role, f"{where}[{n}]") for n, part in enumerate(content))


def _part(part: object, role: str, where: str) -> Part:
    if not isinstance(part, dict) or "type" not in part:
        raise TypeError(f"{where} must be a dict with a 'type'")
    kind = part["type"]
    if kind not in PART_TYPES:
        raise ValueError(f"{where}['type'] must be 'text' or 'image', not {kind!r}")
    if set(part) != PART_KEYS[kind]:
        keys = ", ".join(repr(key) for key in sorted(PART_KEYS[kind]))
        raise TypeError(f"{where} must have exactly {keys}")
    if kind == "text":
        check_text(part["text"], f"{where}['text']")
        return part["text"]
    if role != "user":
        raise ValueError(f"{where}: images go in the user's turns only, not the {role}'s")
    try:
        check_image(part["data"], part["mime_type"])
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}: {exc}") from None
    return Image(bytes(part["data"]), part["mime_type"].lower())


def check_schema(response_schema: object) -> Expected | None:
    """What an answer must match: None, a pydantic model class, or a JSON-schema dict (valid
    JSON Schema, and JSON itself)."""
    if response_schema is None:
        return None
    if isinstance(response_schema, type) and issubclass(response_schema, pydantic.BaseModel):
        try:
            return Expected.of_model(response_schema, response_schema.model_json_schema())
        except pydantic.PydanticUserError as exc:  # a field type JSON Schema cannot describe
            raise ValueError(f"response_schema {response_schema.__name__}: {exc}") from None
    if not isinstance(response_schema, dict):
        raise TypeError(
            "response_schema must be a pydantic model class or a JSON-schema dict, "
            f"not {_kind(response_schema)}"
        )
    try:
        json.dumps(response_schema, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"response_schema is not JSON: {exc}") from None
    return Expected.of_dict(response_schema, _validator(response_schema))


def _validator(schema: dict[str, Any]) -> Any:
    """A jsonschema validator for the schema's own draft (2020-12 when it names none)."""
    import jsonschema  # only callers of dict schemas pay for its import

    validator_class = jsonschema.validators.validator_for(schema)
    try:
        validator_class.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise ValueError(f"response_schema is not a valid JSON Schema: {exc.message}") from None
    return validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)


def _kind(value: object) -> str:
    return f"the class {value.__name__}" if isinstance(value, type) else type(value).__name__


def check_image(image_bytes: object, mime_type: object) -> None:
    """Refuse an image whose bytes are not of the type it claims (or are no bytes at all).
    Which types and sizes a provider accepts is its adapter's check, made before its call."""
    if not isinstance(image_bytes, bytes | bytearray | memoryview):
        raise TypeError(f"image_bytes must be bytes, not {type(image_bytes).__name__}")
    if not isinstance(mime_type, str):
        raise TypeError(f"mime_type must be a str, not {type(mime_type).__name__}")
    data = bytes(image_bytes[:16])
    if not data:
        raise ValueError("the image is empty")
    kind = mime_type.lower()
    if kind == "image/webp":
        matches = data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    elif kind in _MAGIC:
        matches = data.startswith(_MAGIC[kind])
    else:
        return  # a type we have no signature for: the adapter refuses it or sends it
    if not matches:
        raise ValueError(f"the image's bytes are not {kind} (mime_type does not match the data)")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
