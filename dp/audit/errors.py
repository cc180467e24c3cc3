"""Errors of :mod:`dp.audit`."""

from fedvault.dp.errors import PrivacyError


class AuditError(PrivacyError, ValueError):
    """An audit was asked something it cannot answer (bad counts, empty scores, bad confidence)."""
