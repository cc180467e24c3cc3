"""The one exception hierarchy of :mod:`protocols`.

A protocol object raises :class:`ProtocolError` (or a subclass) for anything a peer
could cause: malformed bytes, a message in the wrong stage, a replay, a bad
signature, a request that would leak. Honest callers never see one unless a peer
misbehaves or the round cannot complete.
"""


class ProtocolError(Exception):
    """Base class of every error raised by :mod:`protocols`."""


class DecodeError(ProtocolError, ValueError):
    """Bytes on the wire are not a valid message of the expected schema and version."""


class HeaderError(DecodeError):
    """Bad magic (or another protocol's), unsupported version, or reserved header bits set."""


class UnknownTypeError(DecodeError):
    """The type byte names no message of the protocol."""


class TruncatedError(DecodeError):
    """The message ends before its fields do (or a count exceeds the bytes left)."""


class TrailingBytesError(DecodeError):
    """Bytes remain after the last field of the message."""


class SizeLimitError(DecodeError):
    """A message, field or count exceeds its cap (see :mod:`protocols.codec`)."""


class FieldError(DecodeError):
    """A field holds a value outside its range (e.g. a ciphertext that is not a unit mod n^2)."""


class UsageError(ProtocolError, ValueError):
    """A caller (not a peer) passed arguments that cannot work, e.g. an unknown stage name."""


class StageError(ProtocolError):
    """A message or call arrived in a stage where it is not allowed."""


class RefusedError(ProtocolError):
    """An honest party refuses a request because answering it could leak private data."""


class AbortError(ProtocolError):
    """The round cannot complete (too few survivors); nothing private was revealed."""


# --- SecAgg/SecAgg+ refusals (protocols/secagg_*.py) ---------------------------------
class ReplayError(RefusedError):
    """A message carries another session's tag or another round number."""


class SignatureError(RefusedError):
    """A key advertisement or survivor-set signature is missing or does not verify."""


class DuplicateClientError(RefusedError):
    """A client id (or a client's keys) appears twice where each must appear once."""


class TamperedError(RefusedError):
    """An encrypted share failed AEAD authentication or names the wrong sender/recipient."""


class DoubleRevealError(RefusedError):
    """The server asked for both the self-mask share and the mask-key share of one client."""


class ThresholdError(RefusedError):
    """A threshold is not met (too few live neighbours, survivors or contributions) or is unsafe
    (e.g. a Paillier threshold with 2t <= l)."""


class InconsistentError(RefusedError):
    """The server's view (graph, survivor sets, requested shares) contradicts what it said before."""


class InputError(RefusedError):
    """A vector has the wrong length or dtype, NaN/inf, or values outside the clipping range."""


class BindingError(RefusedError):
    """A client message is not bound to its claimed sender, session, round and stage (its
    binding tag does not verify): forged sender, replay from another round, or tampering."""


class InvalidKeyError(RefusedError):
    """A peer's public key is malformed or of low order (it would make a shared secret
    predictable); the peer that advertised it is named in the message."""


# --- Paillier refusals (protocols/paillier/) -------------------------------------------
class ProofError(RefusedError):
    """A proof (of plaintext knowledge, or of a decryption share) does not verify."""


class CiphertextError(RefusedError):
    """A ciphertext is not a unit of Z*_(n^2) (0 < c < n^2, gcd(c, n) = 1) or has the wrong size."""


class AlreadyAnsweredError(RefusedError):
    """A decryptor already answered a different contributor set for this (session, round)."""


class SumRangeError(AbortError):
    """The decrypted sum has a slot outside the range honest inputs can produce: some contributor
    encrypted an out-of-range plaintext.  Nothing else was revealed; the round's sum is unusable."""
