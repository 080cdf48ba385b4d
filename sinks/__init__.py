"""Stores fed by the workers (Redis hot view, TimescaleDB/PostgreSQL), each with one add/flush contract."""
