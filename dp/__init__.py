"""fedvault's privacy layer: DP-SGD, the per-hospital privacy ledger, verification, noise.

Modules (import the one you need; this package import stays light and loads no torch):

- :mod:`dp.errors`     — ``PrivacyError``, ``BudgetExceeded``, ``LedgerIntegrityError``, ``AccountingError``
- :mod:`dp.events`     — the event vocabulary: ``PoissonSampledGaussian`` (DP-SGD), ``GaussianRelease``
                         (noised statistics), ``DistributedDiscreteGaussian`` (client level), ``Composed``;
                         neighbouring relations ``add_remove`` / ``replace_one``
- :mod:`dp.ledger`     — ``PrivacyLedger``: every event of one hospital, one relation, budget, JSON
- :mod:`dp.accounting` — accountants over events: Opacus RDP/PRV (add/remove), dp_accounting RDP/PLD
                         (both relations), client-level DDG
- :mod:`dp.releases`   — the release inventory (what a run releases and how it is protected)
- :mod:`dp.checks`     — refusals before training (δ vs 1/n_k, unreachable targets, budgets)
- :mod:`dp.training`   — ``PrivateTrainer`` (Opacus DP-SGD, one accountant per hospital)
- :mod:`dp.randomness` — ``RandomStream``: DP-SGD's coins from AES-CTR keyed by the OS CSPRNG
- :mod:`dp.objective`  — loss, optimiser, input/target dtypes, Opacus model check (bring your own model)
- :mod:`dp.calibrate`  — noise multiplier for a target ε
- :mod:`dp.verify`     — independent recomputation with Google's dp_accounting (both relations,
                         client level, release inventory, refuses reproducible runs)
- :mod:`dp.noise`      — discrete Gaussian noise for distributed DP under secure aggregation
- :mod:`dp.report`     — per-hospital table and ε-over-rounds plot
"""

from fedvault.dp.errors import AccountingError, BudgetExceeded, LedgerIntegrityError, PrivacyError

__all__ = ["AccountingError", "BudgetExceeded", "LedgerIntegrityError", "PrivacyError"]
