"""The library the trading host imports: non-blocking emit(), disk spool, delivery metrics."""

from producers.producer import GuardianProducer
from producers.spool import FullPolicy, Spool

__all__ = ["FullPolicy", "GuardianProducer", "Spool"]
