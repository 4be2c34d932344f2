"""Run the real console (`streamlit run app.py`) in a subprocess for end-to-end tests."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import pyotp
from playwright.sync_api import Page, WebSocket
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

from core import accounts
from core.access import Actor
from core.config import PROJECT_ROOT
from core.crypto import SecretBox
from core.models import User
from tests.support.database import MigratedDatabase

APP = PROJECT_ROOT / "app.py"
ARTIFACTS = PROJECT_ROOT / "test-artifacts"  # git-ignored: screenshots and logs to look at


def with_analyst(
    db: MigratedDatabase, username: str = "ann", password: str = "analyst password"
) -> dict[str, str]:
    """Add an analyst to `db`; the environment a console serving `db` runs with."""
    with db.session() as session, session.begin():
        accounts.create_user(session, Actor.cli(), username, password, "analyst")
    return {
        "AI_CONSOLE_DATABASE_URL": db.url,
        "AI_CONSOLE_DATA_DIR": str(db.settings.data_dir),
        "AI_CONSOLE_FERNET_KEYS": db.settings.fernet_keys[0],
    }


def with_admin(
    db: MigratedDatabase, username: str = "ada", password: str = "correct horse battery"
) -> tuple[dict[str, str], str]:
    """Add a super-admin with an authenticator app to `db`: the environment a console serving
    `db` runs with, and the account's TOTP secret (tests.support.browser.sign_in_with_code)."""
    secret = pyotp.random_base32()
    with db.session() as session, session.begin():
        session.add(
            User(
                username=username,
                password_hash=accounts.hash_password(password),
                role="super_admin",
                totp_secret_encrypted=SecretBox(db.settings.fernet_keys).encrypt(secret),
            )
        )
    env = {
        "AI_CONSOLE_DATABASE_URL": db.url,
        "AI_CONSOLE_FERNET_KEYS": ",".join(db.settings.fernet_keys),
        "AI_CONSOLE_DATA_DIR": str(db.settings.data_dir),
    }
    return env, secret


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ConsoleServer:
    """The console on a free loopback port, with `env` added to this process's environment.

    When the block fails, what the browser showed (every page of `page`'s context) is saved to
    test-artifacts/ before the console stops, and the console's output beside it: a screenshot
    taken after the console has stopped shows only Streamlit's greyed "disconnected" page.
    Beside them: when the page sent and received each websocket message (did a click reach the
    console?) and, where py-spy is installed, what every thread of the console was doing.
    """

    def __init__(
        self, env: dict[str, str], page: Page | None = None, startup_timeout_s: float = 60
    ) -> None:
        self.page = page
        self._frames: list[tuple[str, str, str | bytes]] = []  # (time, sent/received, payload)
        if page is not None:
            page.on("websocket", self._watch)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env}
        self.startup_timeout_s = startup_timeout_s
        self.output = ""
        self._lines: list[str] = []
        self._reader: threading.Thread | None = None
        self._process: subprocess.Popen[str] | None = None

    def __enter__(self) -> ConsoleServer:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(APP),
             "--server.port", str(self.port), "--server.address", "127.0.0.1",
             "--server.headless", "true"],
            cwd=PROJECT_ROOT, env=self.env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        # Read the console's output as it comes: a pipe nobody reads fills up (64 KiB), and
        # the console then blocks on its next log line and stops answering the browser.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self._wait_until_healthy()
        return self

    def _watch(self, socket: WebSocket) -> None:
        """Keep every websocket message with its time; they are decoded only if the test fails."""

        def keep(direction: str) -> Callable[[str | bytes], None]:
            def on_frame(payload: str | bytes) -> None:
                at = datetime.now(UTC).astimezone().strftime("%H:%M:%S.%f")[:-3]  # as the log
                self._frames.append((at, direction, payload))

            return on_frame

        socket.on("framesent", keep("sent"))
        socket.on("framereceived", keep("received"))

    def _read(self) -> None:
        assert self._process is not None and self._process.stdout is not None
        for line in self._process.stdout:
            self._lines.append(line)

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        assert self._process is not None and self._reader is not None
        name = _failure_name() if _e is not None else None
        if name is not None:
            self._save_browser(name)
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join()
        self.output = "".join(self._lines)
        if name is not None:
            (ARTIFACTS / f"failed-{name}-console.log").write_text(self.output)

    def _save_browser(self, name: str) -> None:
        """While the console still runs: the pages, the websocket log and the console's threads."""
        ARTIFACTS.mkdir(exist_ok=True)
        if self.page is not None:
            for n, open_page in enumerate(self.page.context.pages):
                open_page.screenshot(path=ARTIFACTS / f"failed-{name}-{n}.png", full_page=True)
            describe = {"sent": _back_message, "received": _forward}
            frames = "\n".join(f"{at} {way} {len(payload)} bytes {describe[way](payload)}"
                               for at, way, payload in self._frames)  # fmt: skip
            (ARTIFACTS / f"failed-{name}-websocket.log").write_text(frames)
        py_spy = shutil.which("py-spy", path=str(Path(sys.executable).parent))
        if py_spy and self._process is not None:
            dump = subprocess.run(
                [py_spy, "dump", "--pid", str(self._process.pid)],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            (ARTIFACTS / f"failed-{name}-threads.txt").write_text(dump.stdout + dump.stderr)

    def health(self) -> str:
        with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as response:
            return response.read().decode()

    def _wait_until_healthy(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                assert self._reader is not None
                self._reader.join()
                output = "".join(self._lines)
                raise RuntimeError(f"console exited with {self._process.returncode}: {output}")
            try:
                self.health()
                return
            except OSError:
                time.sleep(0.2)
        self.__exit__(None, None, None)
        raise RuntimeError(f"console did not answer within {self.startup_timeout_s} s")


def _failure_name() -> str:
    """The running test's id as a file name (pytest sets PYTEST_CURRENT_TEST while it runs)."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "test").split("::")[-1].split(" ")[0]
    return re.sub(r"[^A-Za-z0-9]+", "-", test).strip("-")


def _back_message(payload: str | bytes) -> str:
    """What the browser asked the console for: a rerun names the buttons it presses."""
    if isinstance(payload, str):
        return payload[:80]
    message = BackMsg.FromString(payload)
    kind = message.WhichOneof("type") or "?"
    if kind != "rerun_script":
        return kind
    pressed = [w.id for w in message.rerun_script.widget_states.widgets
               if w.WhichOneof("value") == "trigger_value" and w.trigger_value]  # fmt: skip
    return f"rerun (pressed: {', '.join(pressed) or 'nothing'})"


def _forward(payload: str | bytes) -> str:
    """What the console sent: a new run, a change to the page, the end of a run."""
    if isinstance(payload, str):
        return payload[:80]
    message = ForwardMsg.FromString(payload)
    kind = message.WhichOneof("type") or "?"
    if kind == "script_finished":
        return f"script_finished {ForwardMsg.ScriptFinishedStatus.Name(message.script_finished)}"
    return kind
