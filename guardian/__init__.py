"""Guardian ingestion platform: shared settings, logging and the `guardian` CLI."""

__version__ = "0.1.0"
