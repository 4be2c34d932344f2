"""Provider configs: the one way the console pages and the CLI change them (configs.py), with
the field rules every change passes first (validation.py), credential tests (credentials.py)
and what callers see of a config (views.py). Key rotation is core.crypto's."""

from core.admin.configs import KEY_BOUND_FIELDS, NotFound, ProviderAdmin, StaleEdit
from core.admin.credentials import DEFAULT_HOSTS, CredentialsRejected, target_host
from core.admin.validation import (
    MAX_DESCRIPTION,
    MAX_NAME,
    MAX_PRIORITY,
    MAX_TOKENS,
    MAX_URL,
    AdminError,
    ProviderInput,
    ValidationFailed,
    check_fields,
)
from core.admin.views import ProviderView, amount_text

__all__ = [
    "DEFAULT_HOSTS",
    "KEY_BOUND_FIELDS",
    "MAX_DESCRIPTION",
    "MAX_NAME",
    "MAX_PRIORITY",
    "MAX_TOKENS",
    "MAX_URL",
    "AdminError",
    "CredentialsRejected",
    "NotFound",
    "ProviderAdmin",
    "ProviderInput",
    "ProviderView",
    "StaleEdit",
    "ValidationFailed",
    "amount_text",
    "check_fields",
    "target_host",
]
