"""What the first visitor of a freshly started console sees, and when.

    .venv/bin/python bench/cold_start.py [--runs 3]

Each run migrates a throwaway SQLite database (so the setup page is what should appear), starts
`streamlit run app.py` as the README does, waits until the server answers its health check, then
opens the console in headless Chromium and looks at the page every 50 ms until the setup page's
heading is there. Prints, per run and as medians, the seconds from the request to: the first page
names in the sidebar (Streamlit's auto-discovered file names, or our own links), the console's
own loading state, and the setup page. A warm load (a second tab on the same server) is timed
the same way for comparison.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from playwright.sync_api import Error, Page, sync_playwright

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.console_server import ConsoleServer  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
LOOK = """() => ({
  names: [...document.querySelectorAll(
      '[data-testid="stSidebarNavLink"], [data-testid="stPageLink-NavLink"]')]
      .map(a => a.innerText.trim()).filter(Boolean),
  loading: document.body.innerText.includes("Starting the console"),
  ready: [...document.querySelectorAll("h1, h2, h3")]
      .some(h => h.innerText.includes("Set up the console")),
})"""


def watch(page: Page, url: str) -> dict[str, object]:
    """Seconds from the request to each thing first seen; the sidebar names seen before ready."""
    seen: dict[str, object] = {"names": [], "first_names_s": None, "loading_s": None}
    started = time.perf_counter()
    page.goto(url, wait_until="commit")
    while True:
        now = time.perf_counter() - started
        try:
            look = page.evaluate(LOOK)
        except Error:  # the document was replaced while we looked: look again
            continue
        if look["names"] and seen["first_names_s"] is None:
            seen["first_names_s"], seen["names"] = now, look["names"]
        if look["loading"] and seen["loading_s"] is None:
            seen["loading_s"] = now
        if look["ready"]:
            seen["ready_s"] = now
            return seen
        if now > 120:
            raise TimeoutError("the setup page never appeared")
        time.sleep(0.05)


def one_run(browser_launch) -> tuple[dict[str, object], dict[str, object]]:  # type: ignore[no-untyped-def]
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            "AI_CONSOLE_DATABASE_URL": f"sqlite:///{tmp}/console.db",
            "AI_CONSOLE_DATA_DIR": tmp,
        }
        subprocess.run(
            [sys.executable, "-m", "core", "migrate"],
            cwd=ROOT,
            env={**os.environ, **env},
            check=True,
            capture_output=True,
        )
        browser = browser_launch()
        try:
            with ConsoleServer(env) as console:
                cold = watch(browser.new_page(viewport={"width": 1400, "height": 900}), console.url)
                warm = watch(browser.new_page(viewport={"width": 1400, "height": 900}), console.url)
        finally:
            browser.close()
    return cold, warm


def show(label: str, runs: list[dict[str, object]]) -> None:
    def median(key: str) -> str:
        values = [r[key] for r in runs if r[key] is not None]
        return f"{statistics.median(values):5.2f} s" if values else "  never"  # type: ignore[type-var]

    print(
        f"{label}: setup page after {median('ready_s')}, loading state after "
        f"{median('loading_s')}, sidebar page names after {median('first_names_s')}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    colds, warms = [], []
    with sync_playwright() as playwright:

        def launch():  # type: ignore[no-untyped-def]
            return playwright.chromium.launch(
                executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
            )

        for n in range(args.runs):
            cold, warm = one_run(launch)
            print(f"run {n + 1}: cold {cold}\n       warm {warm}")
            colds.append(cold)
            warms.append(warm)
    show("cold (first request to a fresh server)", colds)
    show("warm (second request, same server)   ", warms)


if __name__ == "__main__":
    main()
