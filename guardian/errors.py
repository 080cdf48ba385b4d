"""The one error hierarchy: every error the product raises on purpose derives from `GuardianError`.

Each also derives from the built-in type callers already expect (a bad event is a `ValueError`, a
closed producer a `RuntimeError`), so `except ValueError` keeps working; `except GuardianError`
catches everything the product means. Each class lives beside the code that raises it and is
importable from where its caller works (the producer's from `producers`, the codec's from
`schemas.errors`); this module holds the root and the ones that belong to no single part.
"""

from __future__ import annotations


class GuardianError(Exception):
    """Root of every error the product raises on purpose; the message says what to do."""


class ConfigError(GuardianError, ValueError):
    """A setting is missing or unusable (a secret without a value, a rules file that does not load)."""
