"""Typed codec errors. Each message says what was wrong with the bytes or the event."""

from guardian.errors import GuardianError


class CodecError(GuardianError, ValueError):
    """Base of every encode/decode failure; the DLQ records `type(error).__name__` and `str(error)`."""


class BadMagicError(CodecError):
    """The first bytes are neither Avro single-object (C3 01) nor Confluent wire format (00)."""


class TruncatedPayloadError(CodecError):
    """The bytes end before the header or the record does."""


class UnknownSchemaError(CodecError):
    """The writer schema named by the fingerprint or registry id is not known."""


class SchemaMismatchError(CodecError):
    """The event does not match the schema (on encode), or the bytes do not decode as it (on decode)."""
