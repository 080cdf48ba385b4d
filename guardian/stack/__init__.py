"""The local real-process stack: Kafka (KRaft), Redis and PostgreSQL without Docker."""
