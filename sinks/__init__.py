"""The stores the worker writes (Redis hot view, TimescaleDB/PostgreSQL) and the history store's upkeep.

Every sink follows one contract (sinks/base.py): `start()`, an idempotent `write(batch)`, `close()`,
and `is_permanent(error)` to tell a refused row from an outage."""
