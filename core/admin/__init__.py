"""Provider configs: the one way the console pages and the CLI change them (configs.py), with
the field rules every change passes first (validation.py). Key rotation is core.crypto's."""

from core.admin.configs import (
    DEFAULT_HOSTS,
    KEY_BOUND_FIELDS,
    CredentialsRejected,
    NotFound,
    ProviderAdmin,
    ProviderView,
    StaleEdit,
    target_host,
)
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
    "check_fields",
    "target_host",
]
