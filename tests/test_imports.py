"""What each entry point loads, in a fresh interpreter: a backend service that imports
core.routing pays for no analytics, accounts, audit or provider SDK it does not use, and the
operator's `--help`, `providers list` and `users …` load no SDK. (How long they take is measured
by bench/startup.py, not asserted here.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.config import PROJECT_ROOT

SDKS = ("openai", "anthropic", "google.genai")
NOT_FOR_ROUTING = (
    "core.usage.queries", "core.usage.rollup", "core.usage.percentiles", "core.usage.export",
    "core.usage.demo",
    "core.usage.demo_rows", "core.usage.monitoring", "core.accounts", "core.admin", "core.audit",
    "core.access", "core.alerts",
    "pandas", "plotly", "streamlit", "numpy", *SDKS,
)  # fmt: skip

REPORT = """
import json, sys
def loaded(names):
    return sorted(n for n in names if any(m == n or m.startswith(n + ".") for m in sys.modules))
"""


def loaded_after(code: str, names: tuple[str, ...], env: dict[str, str] | None = None) -> list[str]:
    script = REPORT + code + f"\nprint('LOADED=' + json.dumps(loaded({list(names)!r})))\n"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=PROJECT_ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        check=True,
    )
    line = next(x for x in result.stdout.splitlines() if x.startswith("LOADED="))
    return json.loads(line.removeprefix("LOADED="))


def test_importing_core_routing_loads_only_the_hot_path() -> None:
    assert loaded_after("import core.routing", NOT_FOR_ROUTING) == []


def test_a_providers_sdk_is_imported_when_that_provider_is_first_used() -> None:
    code = "from core.providers import adapter_class\nadapter_class('claude')"
    assert loaded_after(code, SDKS) == ["anthropic"]


@pytest.mark.parametrize(
    "argv", [["--help"], ["providers", "list"], ["users", "unlock", "nobody"]], ids=" ".join
)
def test_operator_commands_load_no_provider_sdk(argv: list[str], tmp_path: Path) -> None:
    env = {"AI_CONSOLE_DATA_DIR": str(tmp_path), "AI_CONSOLE_DATABASE_URL": ""}
    subprocess.run(
        [sys.executable, "-m", "core", "migrate"],
        cwd=PROJECT_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        check=True,
    )
    code = (
        "import contextlib, io, runpy\n"
        f"sys.argv = ['core', *{argv!r}]\n"
        "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
        "    runpy.run_module('core', run_name='__main__')\n"
    )
    assert loaded_after(code, (*SDKS, "pandas", "streamlit"), env) == []
