"""fedvault's privacy layer: DP-SGD, the per-hospital privacy ledger, verification, noise.

Modules (import the one you need; this package import stays light and loads no torch):

- :mod:`dp.errors`     — ``PrivacyError``, ``BudgetExceeded``, ``LedgerIntegrityError``, ``AccountingError``
- :mod:`dp.ledger`     — ``PrivacyEvent``, ``PrivacyLedger`` (budget, JSON, integrity check)
- :mod:`dp.accounting` — replay events through Opacus' RDP / PRV accountants
- :mod:`dp.training`   — ``PrivateTrainer`` (Opacus DP-SGD, one accountant per hospital)
- :mod:`dp.randomness` — ``RandomStream``: DP-SGD's coins from AES-CTR keyed by the OS CSPRNG
- :mod:`dp.objective`  — loss, optimiser, input/target dtypes, Opacus model check (bring your own model)
- :mod:`dp.calibrate`  — noise multiplier for a target ε
- :mod:`dp.verify`     — independent recomputation with Google's dp_accounting
- :mod:`dp.noise`      — discrete Gaussian noise for distributed DP under secure aggregation
- :mod:`dp.report`     — per-hospital table and ε-over-rounds plot
"""

from fedvault.dp.errors import AccountingError, BudgetExceeded, LedgerIntegrityError, PrivacyError

__all__ = ["AccountingError", "BudgetExceeded", "LedgerIntegrityError", "PrivacyError"]
