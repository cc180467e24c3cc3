"""The one exception hierarchy of :mod:`dp`.

Every error raised on purpose by the privacy layer derives from :class:`PrivacyError`,
so a caller (the federation loop, the CLI) can catch the privacy layer's refusals
without catching programming errors.
"""


class PrivacyError(Exception):
    """Base class of every error raised by :mod:`dp`."""


class BudgetExceeded(PrivacyError):
    """Taking part in this round would push a hospital's ε past its budget.

    ``reason`` is the one-line explanation recorded in history.json's ``refused``
    section; ``round`` is the round that was declined.
    """

    def __init__(self, reason: str, *, client: str = "", round: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.client = client
        self.round = round


class LedgerIntegrityError(PrivacyError, ValueError):
    """A stored ledger is malformed, was edited by hand or is corrupted.

    Raised instead of silently accepting a ledger whose schema, digest or claimed ε
    does not match its events.
    """


class AccountingError(PrivacyError, ValueError):
    """A privacy event or accountant request is invalid or cannot be accounted.

    E.g. a sample rate outside (0, 1], a non-positive noise multiplier, an unknown
    accountant, or a target ε that no noise multiplier in range can reach.
    """
