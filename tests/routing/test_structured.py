"""Structured output: generate(task, prompt, response_schema=Model | dict) asks each provider for
JSON of the schema in its own way and returns `result.parsed`, validated; an invalid answer is
asked for once more from the same provider, and every answer is a usage row with its tokens.
On SQLite and PostgreSQL, for each provider."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from core.routing import ProviderCallError, Router
from tests.fakes import NOT_JSON, FakeProviderServer, count_tokens, make_reply
from tests.support.database import MigratedDatabase
from tests.support.quota import counter, holds
from tests.support.routing import FAKE_NAME, add_config, make_router, run, usage_rows

PROMPT = "Extract the posting: Senior Data Engineer, Berlin, 85000 EUR"
PROVIDERS = ["openai", "claude", "gemini"]


class JobPosting(BaseModel):
    title: str
    salary: int
    remote: bool = True  # the fake answers true where a schema requires it


JOB = JobPosting(title=make_reply(PROMPT), salary=len(PROMPT.split()))  # the fake's answer
DICT_SCHEMA: dict[str, Any] = {
    "title": "Posting",
    "type": "object",
    "properties": {"title": {"type": "string"}, "salary": {"type": "integer"}},
    "required": ["title", "salary"],
    "additionalProperties": False,
}


def sent_schema(provider: str, body: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema the request carries in the provider's own structured-output field."""
    if provider == "openai":
        response_format = body["response_format"]
        assert response_format["type"] == "json_schema"
        return response_format["json_schema"]["schema"]
    if provider == "claude":
        output_format = body["output_config"]["format"]
        assert output_format["type"] == "json_schema"
        return output_format["schema"]
    config = body["generationConfig"]
    assert config["responseMimeType"] == "application/json"
    return config["responseJsonSchema"]


def structured(**options: Any) -> Callable[[Router], Any]:
    return lambda r: r.generate("extraction", PROMPT, user_id=9, **options)


@pytest.mark.parametrize(
    ("schema", "parsed"),
    [
        (JobPosting, JOB),
        (DICT_SCHEMA, {"title": make_reply(PROMPT), "salary": len(PROMPT.split())}),
    ],
    ids=["model", "dict"],
)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_the_answer_is_parsed_into_the_schema(
    db: MigratedDatabase, fake: FakeProviderServer, provider: str, schema: Any, parsed: Any
) -> None:
    add_config(db, fake, provider, tasks=["extraction"])
    result = run(make_router(db), structured(response_schema=schema))
    assert result.parsed == parsed
    sent = sent_schema(provider, fake.last_request(FAKE_NAME[provider]).body)
    assert {"title", "salary"} <= set(sent["required"])
    assert sent["properties"]["salary"]["type"] == "integer"
    [row] = usage_rows(db)
    assert (row.status, row.output_tokens) == ("success", count_tokens([result.text]))


def test_openai_gets_a_strict_schema_named_after_the_model(
    db: MigratedDatabase, fake: FakeProviderServer
) -> None:
    add_config(db, fake, "openai", tasks=["extraction"])
    run(make_router(db), structured(response_schema=JobPosting))
    json_schema = fake.last_request("openai").body["response_format"]["json_schema"]
    assert (json_schema["name"], json_schema["strict"]) == ("JobPosting", True)
    # strict mode: every property required, no others allowed (the SDK's helper)
    assert json_schema["schema"]["required"] == ["title", "salary", "remote"]
    assert json_schema["schema"]["additionalProperties"] is False


@pytest.mark.parametrize(("extra", "strict"), [({}, True), ({"additionalProperties": True}, False)])
def test_a_dict_schema_goes_to_openai_as_given_strict_only_if_it_is(
    db: MigratedDatabase, fake: FakeProviderServer, extra: dict[str, Any], strict: bool
) -> None:
    add_config(db, fake, "openai", tasks=["extraction"])
    schema = DICT_SCHEMA | extra
    run(make_router(db), structured(response_schema=schema))
    json_schema = fake.last_request("openai").body["response_format"]["json_schema"]
    assert (json_schema["name"], json_schema["schema"], json_schema["strict"]) == (
        "Posting",
        schema,
        strict,
    )


def test_without_a_schema_parsed_is_none(db: MigratedDatabase, fake: FakeProviderServer) -> None:
    add_config(db, fake, "gemini", tasks=["extraction"])
    result = run(make_router(db), structured())
    assert (result.parsed, result.text) == (None, make_reply(PROMPT))
    assert "responseMimeType" not in fake.last_request("gemini").body["generationConfig"]


@pytest.mark.parametrize("provider", PROVIDERS)
def test_messages_and_generate_sync_take_a_schema_too(
    db: MigratedDatabase, fake: FakeProviderServer, provider: str
) -> None:
    add_config(db, fake, provider, tasks=["extraction"])
    messages = [
        {"role": "user", "content": "I will paste a job posting."},
        {"role": "assistant", "content": "Go ahead."},
        {"role": "user", "content": PROMPT},
    ]
    router = make_router(db)
    try:
        result = router.generate_sync("extraction", messages=messages, response_schema=JobPosting)
    finally:
        router.close()
    assert result.parsed == JOB
    assert sent_schema(provider, fake.last_request(FAKE_NAME[provider]).body)


@pytest.mark.parametrize("fault", ["wrong_type", "invalid_json"])
@pytest.mark.parametrize("provider", PROVIDERS)
def test_an_invalid_answer_is_asked_for_once_more(
    db: MigratedDatabase, fake: FakeProviderServer, provider: str, fault: str
) -> None:
    config = add_config(db, fake, provider, tasks=["extraction"], daily_token_limit=100_000)
    fake.fail_next(FAKE_NAME[provider], mode=fault)
    result = run(make_router(db, lease_calls=1), structured(response_schema=JobPosting))
    assert result.parsed == JOB
    [failed] = result.attempts
    assert (failed.config_id, failed.error_type) == (config, "invalid_output")
    assert len(fake.requests_for(FAKE_NAME[provider])) == 2
    bad, good = usage_rows(db)
    assert (bad.status, bad.error_type, good.status) == ("error", "invalid_output", "success")
    assert bad.input_tokens == good.input_tokens == count_tokens([PROMPT])
    assert bad.output_tokens > 0 and bad.cost_micro_usd is not None and bad.cost_micro_usd > 0
    # each answer held its own tokens and was settled to what it used
    assert holds(db) == []
    assert counter(db, config) == (bad.total_tokens + good.total_tokens, 0)


@pytest.mark.parametrize(
    ("fault", "says"),
    [
        ("wrong_type", "salary: Input should be a valid integer"),
        ("invalid_json", "the answer is not JSON"),
    ],
)
@pytest.mark.parametrize("provider", PROVIDERS)
def test_two_invalid_answers_raise_naming_the_field_and_nobody_else_is_asked(
    db: MigratedDatabase, fake: FakeProviderServer, provider: str, fault: str, says: str
) -> None:
    config = add_config(
        db, fake, provider, tasks=["extraction"], priority=1, daily_token_limit=100_000
    )
    other = "openai" if provider != "openai" else "claude"
    add_config(db, fake, other, tasks=["extraction"], priority=2)
    fake.fail_next(FAKE_NAME[provider], mode=fault, times=2)
    with pytest.raises(ProviderCallError, match=says) as caught:
        run(make_router(db, lease_calls=1), structured(response_schema=JobPosting))
    assert [a.error_type for a in caught.value.attempts] == ["invalid_output"] * 2
    assert caught.value.error is not None and caught.value.error.kind == "invalid_output"
    assert NOT_JSON not in str(caught.value)  # the field, not the provider's text
    assert fake.requests_for(FAKE_NAME[other]) == []
    rows = usage_rows(db)
    assert [(r.provider_config_id, r.status, r.error_type) for r in rows] == [
        (config, "error", "invalid_output")
    ] * 2
    assert all(r.output_tokens > 0 and says in (r.error_message or "") for r in rows)
    assert holds(db) == []
    assert counter(db, config) == (sum(r.total_tokens for r in rows), 0)


class Unserializable(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    run: Callable[[int], int]


@pytest.mark.parametrize(
    ("schema", "error", "says"),
    [
        (42, TypeError, "pydantic model class or a JSON-schema dict, not int"),
        ("JobPosting", TypeError, "not str"),
        (JOB, TypeError, "not JobPosting"),
        (str, TypeError, "not the class str"),
        ({"type": "object", "default": {1, 2}}, ValueError, "response_schema is not JSON"),
        ({"type": "nonsense"}, ValueError, "not a valid JSON Schema"),
        (Unserializable, ValueError, "response_schema Unserializable"),
    ],
)
def test_a_bad_schema_is_refused_before_anything_is_held_or_sent(
    db: MigratedDatabase,
    fake: FakeProviderServer,
    schema: Any,
    error: type[Exception],
    says: str,
) -> None:
    config = add_config(db, fake, "claude", tasks=["extraction"], daily_token_limit=100_000)
    router = make_router(db, lease_calls=1)
    try:
        with pytest.raises(error, match=says):
            router.generate_sync("extraction", PROMPT, response_schema=schema)
    finally:
        router.close()
    assert fake.requests == [] and usage_rows(db) == []
    assert holds(db) == [] and counter(db, config) == (0, 0)
