"""Whether Kafka, PostgreSQL and the Redis hot view agree (`guardian verify`), repairing what does not,
and the fleet verifying itself on a schedule."""
