"""Binding every client -> server message to its sender, session, round and stage.

The server draws a fresh X25519 key each round and sends its public half in the
``COHORT`` message.  Client ``i`` derives
``K_i = agree(c_sk_i, server_pk, "bind/" || P("bind") || u32 i)`` (``c_sk_i`` is the
share-channel key whose public half ``i`` signed with its identity key), and every
message it sends after its advertisement ends with
``tag = AES-256-GCM(K_i, nonce = u8 type || 0^11, plaintext = "", AD = the message
bytes before the tag)`` - a GMAC over the whole message, header included.  Only ``i``
and the server know ``K_i``; the header names the session tag, round, sender and
message type (one type per stage, so each key authenticates one message per nonce).
So another hospital cannot submit as ``i``, and a message of another round (fresh
keys) or another stage (other nonce, other type byte) does not verify.  GMAC runs at
memory speed (about 0.4 ms for a 4 MB masked vector).
"""

from __future__ import annotations

import struct
from dataclasses import replace

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from fedvault.secagg import keys as K

from .messages import TAG_BYTES, Message



def binding_key(private, peer_public: bytes, params, client: int) -> bytes:
    """``K_i``: the per-round key binding client ``client``'s messages (either side's private key)."""
    return K.agree(private, peer_public, b"bind/" + params._prefix(b"bind") + struct.pack(">I", client))


def _nonce(msg_type: int) -> bytes:
    return bytes([int(msg_type)]) + bytes(11)


def seal(msg: Message, key: bytes) -> Message:
    """``msg`` with its binding tag set (the tag covers every byte before it)."""
    body = msg.encode()[:-TAG_BYTES]
    return replace(msg, tag=AESGCM(key).encrypt(_nonce(msg.TYPE), b"", body))


def verify(data: bytes | memoryview, msg_type: int, key: bytes) -> bool:
    """True iff the last 16 bytes of ``data`` are the binding tag of the rest under ``key``."""
    mv = memoryview(data)
    try:
        AESGCM(key).decrypt(_nonce(msg_type), bytes(mv[-TAG_BYTES:]), mv[:-TAG_BYTES])
    except InvalidTag:
        return False
    return True
