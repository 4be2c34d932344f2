"""Cost of redact() with a key's 8-character runs, against a plain str.replace of the whole key.

    .venv/bin/python bench/redaction.py [--rounds 2000]

Both run on the same messages in the same process, interleaved; prints each one's mean time per
message and the ratio. Messages are about what providers send back (≤ 200 characters, cut by
provider_message) and keys up to 200 characters.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.providers.redaction import redact


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=2000)
    rounds = parser.parse_args().rounds
    key = "".join(f"{chr(65 + i % 26)}{i}" for i in range(70))[:200]
    messages = [
        (key[5:120] + " x ")[:200],
        f"Incorrect API key provided: {key[:6]}...{key[-4:]}. You can find your key at ...",
        "The model gpt-4o-mini does not exist or you do not have access to it.",
    ]
    ours = replace = 0.0
    for _ in range(rounds):
        for text in messages:
            started = time.perf_counter()
            redact(text, [key])
            ours += time.perf_counter() - started
            started = time.perf_counter()
            text.replace(key, "[redacted]")
            replace += time.perf_counter() - started
    count = rounds * len(messages)
    print(f"redact        {ours / count * 1e6:8.1f} µs per message")
    print(f"str.replace   {replace / count * 1e6:8.1f} µs per message")
    print(f"ratio         {ours / replace:8.1f}")


if __name__ == "__main__":
    main()
