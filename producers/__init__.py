"""The library the trading host imports: non-blocking emit(), disk spool, delivery metrics."""

from producers.producer import EventTooLargeError, GuardianProducer, ProducerClosedError
from producers.spool import FullPolicy, Spool

__all__ = ["EventTooLargeError", "FullPolicy", "GuardianProducer", "ProducerClosedError", "Spool"]
