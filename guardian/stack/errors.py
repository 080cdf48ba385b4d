"""Errors of the local stack: each one says what happened and what to do."""

from guardian.errors import GuardianError


class StackError(GuardianError, RuntimeError):
    """A problem starting or stopping a local service; the message names the fix."""
