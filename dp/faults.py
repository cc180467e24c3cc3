"""Deliberate DP faults and white-box audit instruments for DP-SGD — TEST AND AUDIT ONLY.

A privacy audit must show it can catch a broken implementation, so it needs a way to
break one on purpose. This module is that way, named and explicit, instead of patching
library internals at run time:

* :class:`Fault` — ``NO_NOISE`` (the optimizer skips its Gaussian noise) or
  ``NO_CLIPPING`` (it skips per-sample clipping), while the accountant still records
  the configured mechanism: exactly the silent bug an audit exists to catch.
  :class:`~fedvault.dp.training.PrivateTrainer` takes ``fault=`` and builds its
  optimizer with :func:`dp_optimizer_class`. A faulty trainer's reports and the
  history rows of a federation that used one say so (:meth:`Fault.not_private_reason`);
  its ε is **not** a privacy guarantee.
* :class:`GradientCanaryHook` — the audit's gradient (Dirac) canaries: extra
  per-sample gradients appended to the batch's per-sample gradients *before* clipping
  and noise (Nasr et al. 2023, "Tight auditing of differentially private machine
  learning"; Steinke, Nasr & Jagielski 2023). They are clipped and noised exactly as a
  record's gradient would be, so an honest trainer gives them no more than a record's
  privacy loss; :func:`append_per_sample_gradients` is the one place that adds them.

Nothing here is imported by the normal training path unless a fault or a hook is asked
for; importing this module loads no torch (Opacus and torch are imported lazily).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING, Any, Protocol, Sequence

if TYPE_CHECKING:  # pragma: no cover
    import torch


class Fault(str, enum.Enum):
    """A deliberate DP-SGD bug for auditing the auditor (never use outside tests/audits)."""

    NONE = "none"
    NO_NOISE = "no_noise"
    NO_CLIPPING = "no_clipping"

    @classmethod
    def parse(cls, value: "Fault | str | None") -> "Fault":
        """``Fault`` from its value (``None`` means ``NONE``); a clear error otherwise."""
        if value is None:
            return cls.NONE
        try:
            return cls(value)
        except ValueError:
            from fedvault.dp.errors import AccountingError

            raise AccountingError(
                f"fault {value!r} unknown: use one of {', '.join(f.value for f in cls)}"
            ) from None

    @property
    def private(self) -> bool:
        """Whether the DP-SGD mechanism the accountant assumes is actually run."""
        return self is Fault.NONE

    def not_private_reason(self) -> str | None:
        """The sentence every output of a faulty run carries (``None`` for ``NONE``)."""
        if self is Fault.NONE:
            return None
        what = "skipped its Gaussian noise" if self is Fault.NO_NOISE else "skipped per-sample clipping"
        return (
            f"not private: audit fault {self.value!r} injected on purpose (the DP optimizer {what}); "
            "the recorded ε is not a guarantee — test/audit artefact only"
        )


FAULT_NAMES: tuple[str, ...] = tuple(f.value for f in Fault)


def dp_optimizer_class(fault: Fault, base: type | None = None) -> type:
    """``base`` (default Opacus' ``DPOptimizer``; the trainer passes its OS-CSPRNG-noise
    subclass), or a subclass of it that skips noise or clipping.

    The subclasses override Opacus' public ``add_noise`` / ``clip_and_accumulate`` steps
    (the accountant's step hook still runs with the configured noise multiplier).
    """
    if base is None:
        from opacus.optimizers import DPOptimizer

        base = DPOptimizer
    if fault is Fault.NONE:
        return base

    def processed(t: Any) -> None:  # Opacus' "used in a step" mark (checked by zero_grad)
        t._processed = True

    class NoNoiseDPOptimizer(base):  # type: ignore[misc, valid-type]
        """AUDIT FAULT: clips but adds no noise."""

        def add_noise(self) -> None:
            for p in self.params:
                p.grad = p.summed_grad.view_as(p).clone()
                processed(p.summed_grad)

    class NoClippingDPOptimizer(base):  # type: ignore[misc, valid-type]
        """AUDIT FAULT: adds noise but never clips per-sample gradients."""

        def clip_and_accumulate(self) -> None:
            for p in self.params:
                g = self._get_flat_grad_sample(p).to(p.dtype).sum(0)
                p.summed_grad = g if p.summed_grad is None else p.summed_grad + g
                processed(p.grad_sample)

    return NoNoiseDPOptimizer if fault is Fault.NO_NOISE else NoClippingDPOptimizer


class GradientCanaryHook(Protocol):
    """Extra per-sample gradients for one DP-SGD step (audit instrument).

    Called once per optimizer step after the batch's per-sample gradients exist and
    before clipping, with the trainable parameters as they are at that step (at step 0:
    the model the hospital received). Returns a ``(k, P)`` float array/tensor — ``k``
    canary gradients over the ``P`` trainable parameters, flattened in
    ``model.parameters()`` order — or ``None`` when no canary is in this step's batch.
    The hook draws its own sampling coins (rate ``sample_rate`` per canary per step,
    like a record's Poisson sampling).
    """

    def __call__(self, round: int, step: int, sample_rate: float, params: Sequence["torch.Tensor"]) -> Any: ...


def append_per_sample_gradients(params: Sequence["torch.Tensor"], extra: Any) -> int:
    """Append ``extra`` (k, P) to every parameter's ``grad_sample``; returns k."""
    import torch

    if extra is None:
        return 0
    g = torch.as_tensor(extra)
    if g.ndim != 2 or g.shape[1] != sum(p.numel() for p in params):
        raise ValueError(
            f"gradient canaries must be (k, {sum(p.numel() for p in params)}) over the trainable parameters, "
            f"got {tuple(g.shape)}"
        )
    if g.shape[0] == 0:
        return 0
    start = 0
    for p in params:
        block = g[:, start : start + p.numel()].to(dtype=p.grad_sample.dtype).reshape(len(g), *p.shape)
        p.grad_sample = torch.cat([p.grad_sample, block], dim=0)
        start += p.numel()
    return int(g.shape[0])
