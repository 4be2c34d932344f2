"""Who a call was for: the calling service and its tags, stored on every usage row and rolled up.

`generate(..., service="billing-api", tags={"feature": "cv"})` (or `Router(service=...)`, or
AI_CONSOLE_SERVICE for `Router.from_env`) names them. Both are dimensions of the rollups, so
the Usage page can split and filter cost by them at any range: tags are for a few values each
(feature, team, environment), never for ids (a request id per call would make the rollups as
large as the raw rows).

Stored as text: `service` as given ("" for none), the tags as "key=value" pairs sorted by key
and joined by "," ("feature=cv,team=growth"; "" for none), so a tag filter is one LIKE on
rollup rows and the same tags always give the same text. Keys and values are short and made of
characters that need no quoting in it (no "," or "="), checked before anything is held or sent.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

MAX_SERVICE = 64
MAX_TAGS = 8
MAX_KEY = 32
MAX_VALUE = 64
MAX_TAGS_TEXT = MAX_TAGS * (MAX_KEY + 1 + MAX_VALUE) + MAX_TAGS - 1  # the column's length

_SERVICE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]*")
_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_VALUE = re.compile(r"[A-Za-z0-9._:/@+-]+")


def check_service(service: object, what: str = "service") -> str:
    """`service` as stored ("" for None or ""); TypeError or ValueError for one no row should
    carry."""
    if service is None or service == "":
        return ""
    if not isinstance(service, str):
        raise TypeError(f"{what} must be a str or None, not {type(service).__name__}")
    if len(service) > MAX_SERVICE or not _SERVICE.fullmatch(service):
        raise ValueError(
            f"{what} must be 1 to {MAX_SERVICE} letters, digits and . _ : / - "
            f"(starting with a letter or digit), not {service[: MAX_SERVICE + 1]!r}"
        )
    return service


def tags_text(tags: object) -> str:
    """The stored text of `tags` (a mapping of str to str, or None)."""
    if tags is None:
        return ""
    if not isinstance(tags, Mapping):
        raise TypeError(f"tags must be a dict of str to str or None, not {type(tags).__name__}")
    if len(tags) > MAX_TAGS:
        raise ValueError(f"tags can have at most {MAX_TAGS} entries (got {len(tags)})")
    pairs = []
    for key, value in tags.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(
                f"tags must map str to str, not {type(key).__name__} to {type(value).__name__}"
            )
        if len(key) > MAX_KEY or not _KEY.fullmatch(key):
            raise ValueError(
                f"tag name {key[: MAX_KEY + 1]!r} must be 1 to {MAX_KEY} letters, digits and "
                ". _ - (starting with a letter or digit)"
            )
        if len(value) > MAX_VALUE or not _VALUE.fullmatch(value):
            raise ValueError(
                f"the value of tag {key!r} must be 1 to {MAX_VALUE} letters, digits and "
                f". _ : / @ + - (no spaces, commas or '='), not {value[: MAX_VALUE + 1]!r}"
            )
        pairs.append(f"{key}={value}")
    return ",".join(sorted(pairs))


def tag_pairs(text: str | None) -> list[str]:
    """The "key=value" pairs of stored tags text."""
    return [pair for pair in (text or "").split(",") if pair]


def parse_tag(pair: str) -> str:
    """A "key=value" filter as typed (spaces around either side ignored), checked like a tag;
    ValueError with the reason otherwise."""
    key, sep, value = pair.partition("=")
    if not sep:
        raise ValueError(f"a tag filter is name=value, not {pair!r}")
    return tags_text({key.strip(): value.strip()})
