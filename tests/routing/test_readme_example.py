"""The README's core.routing example runs as written, against the fake provider server."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from core.config import PROJECT_ROOT
from tests.fakes import FakeProviderServer, make_reply
from tests.support.database import MigratedDatabase
from tests.support.routing import add_config, allow_planted_keys, usage_rows


def readme_example() -> str:
    readme = (PROJECT_ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, flags=re.DOTALL)
    [example] = [block for block in blocks if "Router.from_env()" in block]
    return example


@pytest.mark.slow
def test_the_readme_example_runs(
    db: MigratedDatabase, fake_providers: FakeProviderServer, tmp_path
) -> None:
    allow_planted_keys(fake_providers)
    add_config(db, fake_providers, "openai", tasks=["extraction"])
    script = tmp_path / "example.py"
    script.write_text(readme_example())
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
    prompt = "Extract the job title: Senior Data Engineer, Berlin"
    first, second = done.stdout.splitlines()
    assert first == f"{make_reply(prompt)} openai gpt-4o-mini"
    assert second.endswith(" ms") and " USD, " in second
    [row] = usage_rows(db)
    assert (row.user_id, row.status) == (42, "success")
