"""The library the trading host imports: non-blocking emit(), disk spool, delivery metrics.

Every error emit() and the constructor raise on purpose is importable from here; all derive from
`guardian.errors.GuardianError`.
"""

from guardian.errors import GuardianError
from producers.orphans import SpoolInUseError
from producers.producer import EventTooLargeError, GuardianProducer, ProducerClosedError
from producers.spool import FullPolicy, Spool
from schemas.validation import InvalidEventError

__all__ = [
    "EventTooLargeError",
    "FullPolicy",
    "GuardianError",
    "GuardianProducer",
    "InvalidEventError",
    "ProducerClosedError",
    "Spool",
    "SpoolInUseError",
]
