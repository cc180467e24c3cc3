"""The one exception hierarchy of :mod:`secagg`.

Every error raised on purpose by a building block derives from :class:`SecAggError`,
so a caller can catch the package's failures without catching programming errors.
Modules add narrower subclasses next to the code that raises them.
"""


class SecAggError(Exception):
    """Base class of every error raised by :mod:`secagg`."""


class EncodingError(SecAggError, ValueError):
    """A value cannot be encoded: NaN/inf, outside the clipping range, or would overflow."""


class ParameterError(SecAggError, ValueError):
    """A parameter (bit width, threshold, key size, ...) is outside its supported range."""


class IntegrityError(SecAggError):
    """Authenticated data failed verification: a signature, MAC or AEAD tag did not check."""
