"""Structured output: the JSON schema an answer must match, and the one place it is checked.

The caller gives a pydantic model class or a JSON-schema dict. Each adapter asks its provider
for JSON of that schema in the provider's own way (OpenAI `response_format` json_schema,
Anthropic `output_config.format`, Gemini `response_json_schema`) from `Ask.schema` and returns
the answer's text as it came. `Expected.accept` turns that text into the caller's value: a
model instance validated by pydantic, or the parsed dict validated by jsonschema. An answer
that does not parse or validate is an `InvalidOutput` naming the failing field.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import pydantic

from core.providers.errors import ProviderError, clip

if TYPE_CHECKING:
    from core.providers.base import GenerationResult

_NOT_A_NAME = re.compile(r"[^A-Za-z0-9_-]+")
WHOLE_ANSWER = "(the answer)"  # where an error lies when it is not in one field


@dataclass(frozen=True)
class Schema:
    """What an adapter sends: a name (letters, digits, _ and -; OpenAI wants one), the JSON
    schema, and the pydantic model it was made from (None: a caller's dict, sent as given)."""

    name: str
    json: dict[str, Any]
    model: type[pydantic.BaseModel] | None = field(default=None, compare=False)


class InvalidOutput(ProviderError):
    """The provider answered, but not with JSON that matches the caller's schema. `used`: the
    (input, output) tokens the answer cost all the same. Not sent elsewhere: the schema is the
    caller's (core.routing asks the same provider once more)."""

    fallback = False
    kind = "invalid_output"

    def __init__(self, provider: str, message: str, used: tuple[int, int]) -> None:
        super().__init__(provider, message)
        self.used = used


@dataclass(frozen=True)
class Expected:
    """A caller's `response_schema`, ready to send (`schema`) and to check answers against."""

    schema: Schema
    validator: Any = field(compare=False)  # a jsonschema validator, for a dict schema

    @classmethod
    def of_model(cls, model: type[pydantic.BaseModel], json_schema: dict[str, Any]) -> Expected:
        return cls(Schema(_name(model.__name__), json_schema, model), None)

    @classmethod
    def of_dict(cls, json_schema: dict[str, Any], validator: Any) -> Expected:
        title = json_schema.get("title")
        return cls(Schema(_name(title if isinstance(title, str) else ""), json_schema), validator)

    def accept(self, result: GenerationResult) -> GenerationResult:
        """`result` with `parsed` set from its text; InvalidOutput if the text is not JSON of
        the schema."""
        used = (result.input_tokens, result.output_tokens)
        try:
            data = json.loads(result.text)
        except ValueError as exc:
            message = f"the answer is not JSON ({exc})"
            raise InvalidOutput(result.provider_type, clip(message), used) from None
        model = self.schema.model
        if model is not None:
            try:
                parsed = model.model_validate(data)
            except pydantic.ValidationError as exc:
                problems = [(e["loc"], e["msg"]) for e in exc.errors(include_url=False)]
                raise _mismatch(result.provider_type, problems, used) from None
        else:
            errors = sorted(self.validator.iter_errors(data), key=lambda e: list(e.path))
            if errors:
                problems = [(tuple(e.path), e.message) for e in errors]
                raise _mismatch(result.provider_type, problems, used)
            parsed = data
        return replace(result, parsed=parsed)


def _mismatch(
    provider: str, problems: list[tuple[tuple[Any, ...], str]], used: tuple[int, int]
) -> InvalidOutput:
    said = "; ".join(f"{'.'.join(map(str, loc)) or WHOLE_ANSWER}: {msg}" for loc, msg in problems)
    return InvalidOutput(provider, clip(f"the answer does not match the schema: {said}"), used)


def _name(text: str) -> str:
    return _NOT_A_NAME.sub("_", text).strip("_")[:64] or "answer"
