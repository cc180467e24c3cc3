"""Sender binding at the transport, attacked by a malicious hospital.

SECURITY.md (SecAgg bullet, mechanism 5): "the round engine then leaves a blamed hospital out of
every later round ... blame comes only from the server's own checks of sender-bound messages, so a
hospital cannot get another excluded"; SPEC T3: the plaintext server refuses "a second upload of one
client" and the driver "attributes [it] to the sender".

The plaintext upload carries its sender only in the header, unauthenticated. A hospital that uploads
first in another hospital's name would get its vector summed as the victim's, and the victim's real
upload refused as a duplicate — blamed on the victim, who is then excluded from every later round.
The transport knows who sent each message (its channel); it must refuse a header naming someone else.
"""

from __future__ import annotations

import numpy as np
import pytest

from fedvault.fl.config import from_dict


def _flower(parties, **kw):
    from fedvault.fl.integrations.flower.local import FlowerInProcess

    return FlowerInProcess(parties, **kw)


@pytest.mark.parametrize("transport", [
    "memory",
    "flower",
])
def test_a_hospital_cannot_upload_in_another_hospitals_name_nor_get_it_excluded(monkeypatch, transport):
    from fedvault.fl.hospital import Hospital
    from fedvault.fl.simulation import federate
    from fedvault.protocols.plaintext import Upload

    join = Hospital.join

    class Impersonate:
        """hospital_0's role: first an upload in hospital_1's name, then its own."""

        def __init__(self, inner, victim: int):
            self.inner, self.victim = inner, victim

        stage = property(lambda self: self.inner.stage)
        done = property(lambda self: self.inner.done)

        def start(self):
            (own,) = self.inner.start()
            forged = Upload(own.session, own.round, self.victim, np.array(own.vector))  # a valid-looking update
            return [forged, own]

        def receive(self, data):
            return self.inner.receive(data)

    victims: dict[str, int] = {}

    def joined(self, setup):
        role = join(self, setup)
        if setup.purpose == "update" and self.name == "hospital_0" and setup.round == 1:
            return Impersonate(role, setup.parties["hospital_1"])
        return role

    monkeypatch.setattr(Hospital, "join", joined)
    cfg = from_dict({"seed": 4, "data": {"hospitals": 3}, "training": {"rounds": 2},
                     "privacy": {"noise_multiplier": 1.0, "standardise": "public"},
                     "aggregation": {"mode": "plaintext"}})
    run = federate(cfg, baseline=False, transport=_flower if transport == "flower" else None)
    r1, r2 = run.history["rounds"]
    blamed = r1.get("blamed") or {}
    assert "hospital_1" not in blamed, blamed  # the victim did nothing wrong
    assert "hospital_0" in blamed, blamed  # the impersonator is named
    assert "hospital_1" not in (run.history.get("excluded") or {}), run.history.get("excluded")
    assert "hospital_1" in r2["participants"], r2["participants"]
    # hospital_1's own (non-zero) update is what the server summed in its name
    assert "hospital_1" in r1["participants"]
    assert float(np.abs(run.aggregates[1]).sum()) > 0
