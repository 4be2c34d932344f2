"""Startup cost of each entry point, in fresh interpreters: wall time and peak memory.

    .venv/bin/python bench/startup.py [--runs 5]

Prints the median of the runs for `import core.routing` (what a backend service pays), and for
`python -m core --help` and `providers list` against a throwaway SQLite database.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MEASURE = """
import contextlib, io, resource, runpy, sys, time
started = time.perf_counter()
{body}
took = time.perf_counter() - started
print(f"RESULT {{took}} {{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}}")
"""
CLI = """
sys.argv = ["core", *{argv!r}]
with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):
    runpy.run_module("core", run_name="__main__")
"""
CASES = {
    "import core.routing": "import core.routing",
    "python -m core --help": CLI.format(argv=["--help"]),
    "python -m core providers list": CLI.format(argv=["providers", "list"]),
}


def measure(body: str, env: dict[str, str]) -> tuple[float, float]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE.format(body=body)],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    _, seconds, mib = next(x for x in out.splitlines() if x.startswith("RESULT")).split()
    return float(seconds), float(mib)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as data:
        env = {**os.environ, "AI_CONSOLE_DATA_DIR": data, "AI_CONSOLE_DATABASE_URL": ""}
        subprocess.run(
            [sys.executable, "-m", "core", "migrate"], cwd=ROOT, env=env,
            capture_output=True, check=True,
        )  # fmt: skip
        for name, body in CASES.items():
            results = [measure(body, env) for _ in range(runs)]
            seconds = statistics.median(r[0] for r in results)
            mib = statistics.median(r[1] for r in results)
            print(f"{name:34} {seconds:6.2f} s  {mib:6.0f} MiB peak  (median of {runs})")


if __name__ == "__main__":
    main()
