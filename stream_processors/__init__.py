"""The Faust worker fleet: agents, alert rules, checkpoints, replay, worker entry point."""
