"""The query API: events from PostgreSQL, health, metrics; bearer-token auth; every request audited."""
