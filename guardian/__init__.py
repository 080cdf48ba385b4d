"""Guardian ingestion platform: one import namespace for every part of the product.

    guardian.producers          the library the trading host imports (repository folder producers/)
    guardian.stream_processors  the worker fleet (stream_processors/)
    guardian.sinks              Redis hot view, PostgreSQL/TimescaleDB store (sinks/)
    guardian.schemas            Avro schemas, codec, event validation (schemas/)
    guardian.api                the query API (api/)
    guardian.settings, .errors, .kafka_config, .logs   the foundation every part uses

An installed wheel holds them under guardian/ (pyproject.toml maps the folders). In a checkout
the folders stay at the top of the repository, where the design puts them; adding the
repository to this package's search path makes `guardian.producers` resolve to producers/
there too, with or without `pip install -e`.
"""

from pathlib import Path

__version__ = "0.1.0"

_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "producers" / "__init__.py").is_file():
    __path__.append(str(_checkout))
