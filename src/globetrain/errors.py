"""Exceptions shared across globetrain's parts.

Every error a user can trigger carries a message that says what is wrong and what to do.
"""


class GlobetrainError(Exception):
    """Base class of globetrain's own errors."""


class ConfigError(GlobetrainError, ValueError):
    """A configuration value is invalid; the message names the field and the value."""


class CorruptPayload(GlobetrainError, ValueError):
    """A wire payload is malformed; the only exception ``Codec.decode`` raises for bad bytes."""


class NonFinitePayload(CorruptPayload):
    """A well-formed payload whose values include NaN or infinity (a poisoned update)."""


class ExchangeFailed(GlobetrainError):
    """An exchange round did not produce an averaged update (timeout, too few peers, ...).

    The sync loop handles it: the device's own contribution goes back into error
    feedback and the global model is left as it was for that round.
    """
