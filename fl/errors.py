"""The one exception hierarchy of :mod:`fl`.

The CLI turns every :class:`FLError` (and the other packages' base errors) into one
line naming the problem and the fix, with a non-zero exit and no traceback.
"""


class FLError(Exception):
    """Base class of every error raised by :mod:`fl`."""


class ConfigError(FLError, ValueError):
    """The configuration file is malformed, has an unknown key or an invalid value."""


class DataError(FLError, ValueError):
    """A data set or CSV file cannot be used as given (missing label, NaN, no rows, ...)."""


class FederationError(FLError):
    """The federation cannot continue (e.g. fewer hospitals than the minimum remain)."""
