"""Alerts before a limit is hit: rules (where to send which alerts), the checks that claim each
alert once, the courier that sends them with retries, and the watcher that runs both.

Nothing here runs on a provider call's path: the routing library never imports it.
"""

from core.alerts.checks import claim_due, error_rates, find_due
from core.alerts.courier import MAX_ATTEMPTS, Outcome, backoff, deliver_due
from core.alerts.outbox import DeliveryError, Message, Outbox
from core.alerts.rules import (
    CHANNEL_NAMES,
    DeliveryView,
    RuleNotFound,
    RuleView,
    TestResult,
    add_rule,
    check_rule,
    config_names,
    list_rules,
    recent_deliveries,
    remove_rule,
    send_test,
)
from core.alerts.targets import DEFAULT_THRESHOLDS, KIND_NAMES, AlertInput
from core.alerts.watcher import AlertWatcher, Round

__all__ = [
    "CHANNEL_NAMES",
    "DEFAULT_THRESHOLDS",
    "KIND_NAMES",
    "MAX_ATTEMPTS",
    "AlertInput",
    "AlertWatcher",
    "DeliveryError",
    "DeliveryView",
    "Message",
    "Outbox",
    "Outcome",
    "Round",
    "RuleNotFound",
    "RuleView",
    "TestResult",
    "add_rule",
    "backoff",
    "check_rule",
    "claim_due",
    "config_names",
    "deliver_due",
    "error_rates",
    "find_due",
    "list_rules",
    "recent_deliveries",
    "remove_rule",
    "send_test",
]
