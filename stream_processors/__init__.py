"""The worker fleet: the ingest loop (batches from Kafka through the stores, alerts and the DLQ,
offsets committed after all of them), the alert engine, the dead-letter tools, and the Faust app
that hosts it (web server, timers, the alert-state table). `guardian worker` starts one."""
