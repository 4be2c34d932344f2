"""Redaction: no message we keep or raise carries an API key, a bearer token, or a piece of
one (any run of MIN_FRAGMENT characters of the key, and its URL-encoded forms)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

_SECRET_PATTERNS = re.compile(
    r"(?i)(bearer\s+)[^\s,;\"']+"  # Authorization headers
    r"|(?<![\w-])sk-[\w-]{6,}"  # OpenAI and Anthropic keys (sk-..., sk-ant-...)
    r"|AIza[\w-]{10,}"  # Google API keys
    r"|((?:api[_-]?key|key|x-goog-api-key|x-api-key)[\"']?\s*[=:]\s*[\"']?)[^\s&,;\"']+"
)


MASK = "[redacted]"


MIN_FRAGMENT = 8


_REPEATED_MASK = re.compile(r"(?:\[redacted\])+")


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """`text` with the given secrets and anything shaped like an API key or bearer token masked.

    For each secret, its URL-encoded forms and any run of MIN_FRAGMENT or more of its characters
    go too (a provider may quote part of a key it refused).
    """
    for secret in secrets:
        if not secret or len(secret) < 4:
            continue
        forms = [secret, *{quote(secret, safe=""), quote_plus(secret)} - {secret}]
        for form in sorted(forms, key=len, reverse=True):  # whole copies first, longest first
            text = text.replace(form, MASK)
        for form in forms:  # then parts: the key's own characters before its encoded forms
            if len(form) >= MIN_FRAGMENT:
                text = _mask_fragments(text, form)
    return _REPEATED_MASK.sub(MASK, _SECRET_PATTERNS.sub(_mask, text))


def _mask_fragments(text: str, secret: str) -> str:
    """Mask every run of MIN_FRAGMENT+ characters of `secret` in `text`, longest match first.

    A set of the secret's n-grams tells in O(1) whether a match can start at a position; only
    then is it extended. Scanning resumes n-1 characters before a match's end, so a second run
    overlapping it is found too (and merged). Cost: O(len(text)) lookups, plus O(len(secret)²)
    per match.
    """
    n = MIN_FRAGMENT
    grams = {secret[i : i + n] for i in range(len(secret) - n + 1)}
    spans: list[list[int]] = []
    i = 0
    while i <= len(text) - n:
        if text[i : i + n] not in grams:
            i += 1
            continue
        end = i + n
        while end < len(text) and text[i : end + 1] in secret:
            end += 1
        if spans and i <= spans[-1][1]:
            spans[-1][1] = max(spans[-1][1], end)
        else:
            spans.append([i, end])
        i = max(i + 1, end - n + 1)
    if not spans:
        return text
    out: list[str] = []
    last = 0
    for start, end in spans:
        out += [text[last:start], MASK]
        last = end
    out.append(text[last:])
    return "".join(out)


def _mask(match: re.Match[str]) -> str:
    prefix = match.group(1) or match.group(2) or ""
    return f"{prefix}[redacted]"
