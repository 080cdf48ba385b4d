"""`guardian bench peers`: the same workload through our worker and the ingestion paths a user would
compare it with (Quix Streams, Kafka Connect + Debezium's JDBC sink, a plain decode loop); bench/peers/run.py."""
