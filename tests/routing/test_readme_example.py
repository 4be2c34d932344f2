"""The README's core.routing example runs as written, against the fake provider server."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from core.config import PROJECT_ROOT
from core.models import UsageLog
from tests.fakes import FakeProviderServer, make_reply
from tests.support.database import MigratedDatabase
from tests.support.routing import add_config, allow_planted_keys, usage_rows


def readme_example(marker: str) -> str:
    """The README's one core.routing example that contains `marker`."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    [example] = [block for block in blocks if "Router.from_env()" in block and marker in block]
    return example


def run_example(db: MigratedDatabase, example: str, tmp_path) -> str:  # type: ignore[no-untyped-def]
    """Run it as a service would, in a process of its own; its standard output."""
    script = tmp_path / "example.py"
    script.write_text(example)
    env = {
        "PATH": os.environ["PATH"],
        "PYTHONPATH": str(PROJECT_ROOT),
        "AI_CONSOLE_DATABASE_URL": db.url,
        "AI_CONSOLE_FERNET_KEYS": ",".join(db.settings.fernet_keys),
        "AI_CONSOLE_BASE_URL_ALLOWLIST": "127.0.0.1",  # the fake server is on loopback
        "AI_CONSOLE_DATA_DIR": str(db.settings.data_dir),  # the spool stays in the test
    }
    done = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def run_against_the_fake(
    db: MigratedDatabase,
    fake: FakeProviderServer,
    marker: str,
    provider: str,
    task: str,
    tmp_path,  # type: ignore[no-untyped-def]
) -> tuple[list[str], UsageLog]:
    """Run the example that contains `marker` with one `provider` config serving `task`: the
    lines it printed, and the one usage row it wrote."""
    allow_planted_keys(fake)
    add_config(db, fake, provider, tasks=[task])
    out = run_example(db, readme_example(marker), tmp_path)
    [row] = usage_rows(db)
    return out.splitlines(), row


@pytest.mark.slow
def test_the_readme_example_runs(
    db: MigratedDatabase, fake_providers: FakeProviderServer, tmp_path
) -> None:
    lines, row = run_against_the_fake(
        db, fake_providers, "except QuotaExceeded", "openai", "extraction", tmp_path
    )
    prompt = "Extract the job title: Senior Data Engineer, Berlin"
    first, second = lines
    assert first == f"{make_reply(prompt)} openai gpt-4o-mini"
    assert second.endswith(" ms") and " USD, " in second
    assert (row.user_id, row.status) == (42, "success")
    assert (row.service, row.tags) == ("jobs-ingest", "feature=job-titles")


@pytest.mark.slow
def test_the_readme_streaming_example_runs(
    db: MigratedDatabase, fake_providers: FakeProviderServer, tmp_path
) -> None:
    lines, row = run_against_the_fake(
        db, fake_providers, "router.stream(", "claude", "cv_draft", tmp_path
    )
    text, totals = lines
    assert text == make_reply("Draft a two-line CV summary for a data engineer")
    assert totals.endswith(" USD") and " tokens, " in totals
    assert (row.user_id, row.status, row.task_type) == (42, "success", "cv_draft")


@pytest.mark.slow
def test_the_readme_structured_output_example_runs(
    db: MigratedDatabase, fake_providers: FakeProviderServer, tmp_path
) -> None:
    lines, row = run_against_the_fake(
        db, fake_providers, "response_schema=", "gemini", "extraction", tmp_path
    )
    prompt = "Extract the posting: Senior Data Engineer, Berlin, 85000 EUR"
    # the fake fills a string with its echo of the prompt, an integer with its word count
    assert lines == [f"{make_reply(prompt)} {len(prompt.split())}"]
    assert (row.status, row.task_type) == ("success", "extraction")
    body = fake_providers.last_request("gemini").body
    assert body["generationConfig"]["responseMimeType"] == "application/json"
