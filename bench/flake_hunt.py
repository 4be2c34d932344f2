"""Run tests again and again while every core is busy, to find the ones that fail under load.

    .venv/bin/python bench/flake_hunt.py            # the browser tests, 30 runs in a row
    .venv/bin/python bench/flake_hunt.py --runs 50 -- tests/quota/test_leases.py -k lease

A test that only passes on an idle machine fails in CI sooner or later. This keeps both cores
busy (stress-ng --cpu when it is installed, else one spinning process per core), runs pytest
with the given arguments (default: `-m browser`) up to --runs times, stops at the first failing
run and prints its output; the test artifacts (screenshots) stay where the test put them.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _spin() -> None:
    while True:
        pass


@contextmanager
def busy_cores(cores: int) -> Iterator[str]:
    """Every core busy for as long as the block runs; yields what makes the load."""
    if shutil.which("stress-ng"):
        hog = subprocess.Popen(
            ["stress-ng", "--cpu", str(cores), "--timeout", "0", "--quiet"],
            stdout=subprocess.DEVNULL,
        )
        try:
            yield f"stress-ng --cpu {cores}"
        finally:
            hog.terminate()
            hog.wait()
        return
    spinners = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(cores)]
    for spinner in spinners:
        spinner.start()
    try:
        yield f"{cores} spinning processes"
    finally:
        for spinner in spinners:
            spinner.terminate()
            spinner.join()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    parser.add_argument("pytest_args", nargs="*", default=["-m", "browser"])
    args = parser.parse_args()
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args.pytest_args]
    with busy_cores(args.cores) as load:
        print(f"{' '.join(command[1:])}, up to {args.runs} runs, under {load}", flush=True)
        for run in range(1, args.runs + 1):
            started = time.monotonic()
            done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
            took = time.monotonic() - started
            summary = (done.stdout.strip().splitlines() or ["(no output)"])[-1]
            print(f"run {run:>3}: {summary} ({took:.0f} s)", flush=True)
            if done.returncode != 0:
                print(done.stdout[-20_000:], done.stderr[-5_000:], sep="\n")
                print(f"failed on run {run} of {args.runs}")
                return 1
    print(f"{args.runs} runs in a row passed under {load}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
