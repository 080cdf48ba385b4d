"""Kafka retention as the replay log: re-drive a time range through the sinks (`guardian replay`), and
move the fleet's own offsets (`guardian offsets reset`)."""
