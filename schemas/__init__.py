"""Avro schemas (the single source of truth), the event codec and the compatibility check."""
