"""Assert that an error carries neither a secret nor an SDK exception, however it is walked.

An SDK exception holds the request (and so the API key in its headers); an error we raise must
not reach one through `__cause__`, `__context__`, or a routing error's `.error`.
"""

from __future__ import annotations

import traceback
from collections.abc import Iterable

SDK_MODULES = ("openai", "anthropic", "google", "httpx2", "httpcore2", "httpx", "httpcore")


def exception_chain(error: BaseException) -> list[BaseException]:
    """`error` and every exception reachable from it (cause, context, `.error`), each once."""
    found: list[BaseException] = []
    stack: list[object] = [error]
    while stack:
        current = stack.pop()
        if not isinstance(current, BaseException) or any(current is e for e in found):
            continue
        found.append(current)
        stack += [current.__cause__, current.__context__, getattr(current, "error", None)]
    return found


def assert_clean(error: BaseException, secrets: Iterable[str]) -> None:
    """No SDK exception in `error`'s chain, and no secret in its str, repr or traceback text."""
    chain = exception_chain(error)
    sdk = [e for e in chain if type(e).__module__.split(".")[0] in SDK_MODULES]
    assert not sdk, f"SDK exceptions reachable from {type(error).__name__}: {sdk!r}"
    for link in chain:
        rendered = "".join(traceback.format_exception(link)) + str(link) + repr(link)
        for secret in secrets:
            assert secret not in rendered, f"a secret leaks through {type(link).__name__}"
