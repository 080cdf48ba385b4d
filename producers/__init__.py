"""The library the trading host imports: non-blocking emit(), disk spool, delivery metrics, and its
guardrail state back at start (restore(), checkpoint()).

Every error emit() and the constructor raise on purpose is importable from here; all derive from
`guardian.errors.GuardianError`.
"""

from guardian.errors import GuardianError
from guardian.producers.orphans import SpoolInUseError
from guardian.producers.producer import EventTooLargeError, GuardianProducer, ProducerClosedError
from guardian.producers.restore import Breaker, RestoredState, SymbolState
from guardian.producers.spool import FullPolicy, Spool
from guardian.schemas.validation import InvalidEventError

__all__ = [
    "Breaker",
    "EventTooLargeError",
    "FullPolicy",
    "GuardianError",
    "GuardianProducer",
    "InvalidEventError",
    "ProducerClosedError",
    "RestoredState",
    "Spool",
    "SpoolInUseError",
    "SymbolState",
]
