"""Token limits held in the database: reservations (ledger.py) and leases of them (leases.py)."""
