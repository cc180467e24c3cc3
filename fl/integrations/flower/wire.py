"""How fedvault's protocol messages ride on Flower messages.

Every fedvault message is a Flower message of type ``"train.fedvault"`` (so a
ClientApp routes it to the handler :meth:`FedVaultMod.register` adds, next to the
user's own ``@app.train()``) whose :class:`~flwr.app.RecordDict` has a
:class:`~flwr.app.ConfigRecord` under :data:`RECORD` with::

    v      2 (this mapping's version)
    stage  "enrol", "advertise", "masked_input" (the message that carries the model), or the
           server role's stage name for every other protocol message
    round  the server round
    wire   the protocol message's bytes (protocols/SPEC.md), absent for "enrol"

Server -> client extras: ``enrol`` carries the round's *proposal* (``dim``,
``clip``, ``bits``, ``graph``) so that a hospital refuses a
misconfigured round before it trains or is charged; ``advertise`` carries the
round's public :class:`~protocols.secagg.SecAggParams` plus ``model`` (SHA-256 of
the global model, :func:`model_hash`) and ``roster`` (the roster fingerprint);
``masked_input`` carries the global model under :data:`WEIGHTS` and the train
config under :data:`CONFIG`.  Client -> server: ``client`` (its fedvault id) and
``wire``; ``enrol`` replies carry ``client`` and ``roster``, or a Flower error
(``fedvault/budget: ...``, ``fedvault/misconfigured: ...``, ``fedvault/refused: ...``).

Model binding.  The session id of the protocol's parameters is not the server's
random session but :func:`bound_session` of it, the model hash and the roster
fingerprint, computed by every hospital itself.  The session id enters the
session tag that every signed key advertisement and every signed survivor set
covers, so hospitals shown different models (or rosters) sign different tags and
refuse each other's signatures: a round completes only if every survivor signed
the same model hash.  Before training, a hospital checks that the model it is
given hashes to the committed value.

The model travels as the user's ArrayRecord; fedvault flattens its arrays in record
order into one float64 vector (``flatten``/``unflatten``), the same order as
:func:`fl.models.get_vector` for models without buffers (``ArrayRecord(model.state_dict())``).
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
from flwr.app import DEFAULT_TTL, Array, ArrayRecord, ConfigRecord, Message, Metadata, RecordDict

from fedvault.protocols.secagg import SecAggParams

RECORD = "fedvault"
WEIGHTS = "fedvault.weights"
CONFIG = "fedvault.config"
STATE = "fedvault.round"
VERSION = 2
ENROL = "enrol"
TRAIN = "masked_input"  # the message carrying the model and the shares a client needs before its masked input
ACTION = "fedvault"
MESSAGE_TYPE = f"train.{ACTION}"
_SESSION_DOMAIN = b"fedvault/flower/session/v2\0"


def model_hash(arrays: ArrayRecord) -> bytes:
    """SHA-256 over the model's array names, shapes and float64 values (record order)."""
    h = hashlib.sha256(b"fedvault/flower/model/v1\0")
    for k, a in arrays.items():
        v = np.ascontiguousarray(np.asarray(a.numpy(), dtype=np.float64))
        h.update(k.encode() + b"\0" + repr(tuple(v.shape)).encode() + b"\0")
        h.update(v.tobytes())
    return h.digest()


def bound_session(session: bytes, model: bytes, roster: str) -> bytes:
    """The protocol's session id: the server's session bound to the model hash and the roster."""
    if not 1 <= len(session) <= 64 or len(model) != 32:
        raise ValueError("session must be 1-64 bytes and the model hash 32 bytes")
    return hashlib.sha256(_SESSION_DOMAIN + bytes([len(session)]) + session + model + roster.encode()).digest()


def instruction(content: RecordDict, node: int, message_type: str, group_id: str = "") -> Message:
    """A server->node message: ``Message(content, node, message_type)`` inside a Flower runtime; outside
    one (e.g. :class:`~fl.integrations.flower.local.InProcessGrid`), the same message with explicit metadata
    (Flower's constructor then has no run to take the ids from)."""
    try:
        return Message(content=content, dst_node_id=node, message_type=message_type, group_id=group_id)
    except RuntimeError:
        return Message(content, metadata=Metadata(
            run_id=0, message_id="", src_node_id=1, dst_node_id=node, reply_to_message_id="", group_id=group_id,
            created_at=time.time(), ttl=DEFAULT_TTL, message_type=message_type))


def is_fedvault(msg: Message) -> bool:
    return (not msg.has_error()) and RECORD in msg.content.config_records


def params_record(p: SecAggParams, session: bytes, model: bytes, roster: str) -> dict:
    """Every public round parameter (``SecAggParams.to_record``: threat model and degree included), with the
    server's raw ``session`` instead of the bound one, plus the ``model`` hash and the ``roster`` fingerprint."""
    if p.session_id != bound_session(session, model, roster):
        raise ValueError("parameters are not bound to this session, model and roster")
    return dict(p.to_record(), session=session, model=model, roster=roster)


def params_from(rec: ConfigRecord) -> SecAggParams:
    """The round parameters, with the session id bound (by this process) to the model hash and roster."""
    fields = {k: rec[k] for k in rec.keys()}
    fields["session"] = bound_session(bytes(rec["session"]), bytes(rec["model"]), str(rec["roster"]))
    return SecAggParams.from_record(fields)


def request(stage: str, round: int, *, wire: bytes | None = None, fields: dict | None = None,
            weights: ArrayRecord | None = None, config: ConfigRecord | None = None) -> RecordDict:
    rec: dict = {"v": VERSION, "stage": stage, "round": int(round)}
    if wire is not None:
        rec["wire"] = wire
    if fields:
        rec.update(fields)
    rd = RecordDict({RECORD: ConfigRecord(rec)})
    if weights is not None:
        rd[WEIGHTS] = weights
    if config is not None:
        rd[CONFIG] = config
    return rd


def reply(stage: str, round: int, client: int, wire: bytes | None = None, **extra: object) -> RecordDict:
    fields: dict = {"v": VERSION, "stage": stage, "round": int(round), "client": int(client), **extra}
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
