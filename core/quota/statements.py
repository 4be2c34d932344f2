"""The quota SQL, written once for PostgreSQL and SQLite (see ledger.py for the mechanism)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Date, Integer, bindparam, text

from core.models import UTCDateTime

# Take `tokens` and `micro_usd` on a config's day, only if used + reserved + the amount + its
# margin stays within the daily limit and budget, and the month's other days + today + the amount
# + its margin within the monthly ones. (CAST: psycopg sends a small number as int2 or int4, and
# PostgreSQL would add two of them in that type and overflow.)
_MONTH_BEFORE = """(
      SELECT COALESCE(SUM({used} + {reserved}), 0) FROM ai_provider_quota_counters
      WHERE config_id = :config_id AND day >= :month_start AND day < :day
  )"""
_TOKENS_BEFORE = _MONTH_BEFORE.format(used="used_tokens", reserved="reserved_tokens")
_MONEY_BEFORE = _MONTH_BEFORE.format(used="used_micro_usd", reserved="reserved_micro_usd")
_NEW_TOKENS = "CAST(:tokens AS BIGINT) + CAST(:margin AS BIGINT)"
_NEW_MONEY = "CAST(:micro_usd AS BIGINT) + CAST(:margin_micro_usd AS BIGINT)"
_ADDED_TOKENS = (
    "c.used_tokens + c.reserved_tokens + excluded.reserved_tokens + CAST(:margin AS BIGINT)"
)
_ADDED_MONEY = (
    "c.used_micro_usd + c.reserved_micro_usd + excluded.reserved_micro_usd"
    " + CAST(:margin_micro_usd AS BIGINT)"
)
_COUNT = f"""
INSERT INTO ai_provider_quota_counters AS c
  (config_id, day, used_tokens, reserved_tokens, used_micro_usd, reserved_micro_usd)
SELECT :config_id, :day, 0, :tokens, 0, :micro_usd
WHERE {_NEW_TOKENS} <= :daily_limit
  AND {_NEW_TOKENS} + {_TOKENS_BEFORE} <= :monthly_limit
  AND {_NEW_MONEY} <= :daily_budget
  AND {_NEW_MONEY} + {_MONEY_BEFORE} <= :monthly_budget
ON CONFLICT (config_id, day) DO UPDATE
SET reserved_tokens = c.reserved_tokens + excluded.reserved_tokens,
    reserved_micro_usd = c.reserved_micro_usd + excluded.reserved_micro_usd
WHERE {_ADDED_TOKENS} <= :daily_limit
  AND {_ADDED_TOKENS} + {_TOKENS_BEFORE} <= :monthly_limit
  AND {_ADDED_MONEY} <= :daily_budget
  AND {_ADDED_MONEY} + {_MONEY_BEFORE} <= :monthly_budget
RETURNING config_id
"""
_HOLD = (
    "INSERT INTO ai_provider_quota_reservations"
    " (config_id, day, tokens, micro_usd, expires_at, created_at)"
)
_TIMES = (bindparam("expires_at", type_=UTCDateTime()), bindparam("now", type_=UTCDateTime()))

# SQLite: the count, then the hold, in one transaction (the first takes the write lock).
COUNT = text(_COUNT)
HOLD = text(
    _HOLD + " VALUES (:config_id, :day, :tokens, :micro_usd, :expires_at, :now) RETURNING id"
).bindparams(*_TIMES)

# PostgreSQL: the same count as a data-modifying CTE, so the reservation is one statement and
# one round trip in autocommit mode; the hold is inserted only if the counter took the tokens.
RESERVE = text(
    f"WITH taken AS ({_COUNT})\n{_HOLD}\n"
    "SELECT config_id, :day, :tokens, :micro_usd, :expires_at, :now FROM taken RETURNING id"
).bindparams(*_TIMES)

RELEASE = text(
    "DELETE FROM ai_provider_quota_reservations WHERE id IN :ids RETURNING id, tokens, micro_usd"
).bindparams(bindparam("ids", expanding=True))

# Taking tokens and micro-dollars out of a hold, only if it is still there and holds that many:
# a call's draw on a lease (they move to used) or a lease giving back what no call was promised
# (they are freed).
TAKE = text(
    "UPDATE ai_provider_quota_reservations"
    " SET tokens = tokens - :tokens, micro_usd = micro_usd - :micro_usd"
    " WHERE id = :id AND tokens >= :tokens AND micro_usd >= :micro_usd RETURNING id"
)

# A live process's holds: pushed forward, never back.
RENEW = text(
    "UPDATE ai_provider_quota_reservations SET expires_at = :until "
    "WHERE id IN :ids AND expires_at < :until"
).bindparams(bindparam("ids", expanding=True), bindparam("until", type_=UTCDateTime()))

RELEASE_HELD = text("""
UPDATE ai_provider_quota_counters SET reserved_tokens = reserved_tokens - :released,
  reserved_micro_usd = reserved_micro_usd - :released_micro_usd
WHERE config_id = :config_id AND day = :day
""")

# Usage is counted for every config, limited or not, so a limit set later in the day or month
# already sees what was used before it. (A config deleted meanwhile is skipped.)
ADD_USED = text("""
INSERT INTO ai_provider_quota_counters AS c
  (config_id, day, used_tokens, reserved_tokens, used_micro_usd, reserved_micro_usd)
SELECT :config_id, :day, :used, 0, :used_micro_usd, 0
WHERE EXISTS (SELECT 1 FROM ai_provider_configs WHERE id = :config_id)
ON CONFLICT (config_id, day) DO UPDATE SET used_tokens = c.used_tokens + excluded.used_tokens,
  used_micro_usd = c.used_micro_usd + excluded.used_micro_usd
""")

EXPIRED = (
    text(
        "DELETE FROM ai_provider_quota_reservations WHERE expires_at < :now "
        "RETURNING config_id, day, tokens, micro_usd"
    )
    .bindparams(bindparam("now", type_=UTCDateTime()))
    .columns(config_id=Integer(), day=Date(), tokens=BigInteger(), micro_usd=BigInteger())
)

STANDING = text("""
SELECT
  COALESCE(SUM(CASE WHEN day = :day THEN used_tokens ELSE 0 END), 0),
  COALESCE(SUM(CASE WHEN day = :day THEN reserved_tokens ELSE 0 END), 0),
  COALESCE(SUM(used_tokens), 0),
  COALESCE(SUM(reserved_tokens), 0),
  COALESCE(SUM(CASE WHEN day = :day THEN used_micro_usd ELSE 0 END), 0),
  COALESCE(SUM(CASE WHEN day = :day THEN reserved_micro_usd ELSE 0 END), 0),
  COALESCE(SUM(used_micro_usd), 0),
  COALESCE(SUM(reserved_micro_usd), 0)
FROM ai_provider_quota_counters WHERE config_id = :config_id AND day >= :month_start AND day <= :day
""")
