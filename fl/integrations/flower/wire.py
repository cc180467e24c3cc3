"""How fedvault's protocol messages ride on Flower messages.

Every fedvault message is a Flower message of type ``"train"`` whose
:class:`~flwr.app.RecordDict` has a :class:`~flwr.app.ConfigRecord` under
:data:`RECORD` with::

    v      1 (this mapping's version)
    stage  "enrol" | "advertise" | "share" | "masked_input" | "consistency" | "unmask"
    round  the server round
    wire   the protocol message's bytes (protocols/SPEC.md), absent for "enrol"

Server -> client extras: ``advertise`` carries the round's public
:class:`~protocols.secagg.SecAggParams` (``session``, ``clients``, ``threshold``,
``graph``, ``bits``, ``clip``, ``frac_bits``, ``dim``); ``masked_input`` carries the
global model under :data:`WEIGHTS` (an :class:`~flwr.app.ArrayRecord`).
Client -> server: ``client`` (its fedvault id) and ``wire``; ``enrol`` replies carry
``client`` only, or a Flower error (e.g. the hospital's privacy budget is spent).

The model travels as the user's ArrayRecord; fedvault flattens its arrays in record
order into one float64 vector (``flatten``/``unflatten``), the same order as
:func:`fl.models.get_vector` for models without buffers (``ArrayRecord(model.state_dict())``).
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, RecordDict

from fedvault.protocols.secagg import SecAggParams

RECORD = "fedvault"
WEIGHTS = "fedvault.weights"
STATE = "fedvault.round"
VERSION = 1
ENROL = "enrol"
STAGES = ("advertise", "share", "masked_input", "consistency", "unmask")
MESSAGE_TYPE = "train"


def is_fedvault(msg: Message) -> bool:
    return (not msg.has_error()) and RECORD in msg.content.config_records


def params_record(p: SecAggParams) -> dict:
    return p.to_record()  # every parameter incl. the threat model and degree (helper B's API)


def params_from(rec: ConfigRecord) -> SecAggParams:
    return SecAggParams.from_record(rec)


def request(stage: str, round: int, *, wire: bytes | None = None, params: SecAggParams | None = None,
            weights: ArrayRecord | None = None) -> RecordDict:
    fields: dict = {"v": VERSION, "stage": stage, "round": int(round)}
    if wire is not None:
        fields["wire"] = wire
    if params is not None:
        fields.update(params_record(params))
    rd = RecordDict({RECORD: ConfigRecord(fields)})
    if weights is not None:
        rd[WEIGHTS] = weights
    return rd


def reply(stage: str, round: int, client: int, wire: bytes | None = None) -> RecordDict:
    fields: dict = {"v": VERSION, "stage": stage, "round": int(round), "client": int(client)}
    if wire is not None:
        fields["wire"] = wire
    return RecordDict({RECORD: ConfigRecord(fields)})


def flatten(arrays: ArrayRecord) -> np.ndarray:
    """All arrays of the record, in record order, as one float64 vector."""
    return np.concatenate([np.asarray(a.numpy(), dtype=np.float64).reshape(-1) for a in arrays.values()])


def unflatten(vec: np.ndarray, like: ArrayRecord) -> ArrayRecord:
    """The inverse of :func:`flatten`, with the shapes and dtypes of ``like``."""
    out, off = {}, 0
    for k, a in like.items():
        ref = a.numpy()
        n = int(ref.size)
        out[k] = Array(np.asarray(vec[off:off + n], dtype=ref.dtype).reshape(ref.shape))
        off += n
    if off != vec.shape[0]:
        raise ValueError(f"vector has {vec.shape[0]} values, the model {off}")
    return ArrayRecord(out)
