"""What core.routing raises: every failure a caller can see is a `RoutingError`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from core.providers.errors import ProviderError

if TYPE_CHECKING:
    from core.routing.attempts import Attempt


class RoutingError(Exception):
    """Base of everything core.routing raises."""


class UnknownTask(RoutingError, ValueError):
    """The task is not one of extraction, cv_draft, cover_letter, validation."""


class NoProviderAvailable(RoutingError):
    """No config (and no legacy environment variable) serves the task."""


class QuotaExceeded(RoutingError):
    """Every candidate's daily or monthly token limit would be exceeded by this call."""

    def __init__(self, message: str, attempts: Sequence[Attempt]) -> None:
        super().__init__(message)
        self.attempts = tuple(attempts)


class DatabaseUnavailable(RoutingError):
    """The console's database did not answer and the call needs it: no configs read yet, or
    (LimitsUnavailable) a limit to check. Calls that need no database keep working meanwhile."""


class LimitsUnavailable(DatabaseUnavailable):
    """Every candidate that could serve the call has a token limit, the database that keeps
    the limits did not answer, and no lease of this process covers the call. `config_ids` names
    them; the calls succeed again as soon as the database answers."""

    def __init__(self, message: str, config_ids: Sequence[int], attempts: Sequence[Attempt]):
        super().__init__(message)
        self.config_ids = tuple(config_ids)
        self.attempts = tuple(attempts)


class ProviderCallError(RoutingError):
    """The call failed: a bad request (raised at once), or every candidate failed.

    `error` is the last provider's error (provider-neutral, redacted); `attempts` lists all.
    A stream that broke off after its first piece keeps what it had sent in `partial_text`.
    """

    def __init__(
        self,
        message: str,
        error: ProviderError | None,
        attempts: Sequence[Attempt],
        partial_text: str = "",
    ):
        super().__init__(message)
        self.error = error
        self.attempts = tuple(attempts)
        self.partial_text = partial_text
