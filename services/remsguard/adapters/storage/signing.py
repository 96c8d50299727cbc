"""Ed25519 signed tree heads: the key from configuration, the signed message, verification.

The signed message of a head is ``b"remsguard/tree-head/v1\\n" + tree_size + "\\n" +
signed_at (integer microseconds since the Unix epoch) + "\\n" + root_hash (hex)``. A key is
named by ``key_id``: the first 16 hex digits of SHA-256 over its raw 32-byte public key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "HeadSigner",
    "head_message",
    "key_id",
    "load_private_key",
    "load_public_key",
    "verify_head_signature",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(at: datetime) -> int:
    aware = at.replace(tzinfo=UTC) if at.tzinfo is None else at
    return (aware - _EPOCH) // timedelta(microseconds=1)


def head_message(tree_size: int, root_hash: str, signed_at: datetime) -> bytes:
    return f"remsguard/tree-head/v1\n{tree_size}\n{_micros(signed_at)}\n{root_hash}".encode()


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _seed(text: str) -> bytes | None:
    text = text.strip()
    for decode in (bytes.fromhex, base64.b64decode):
        try:
            raw = decode(text)
        except (ValueError, binascii.Error):
            continue
        if len(raw) == 32:
            return raw
    return None


def load_private_key(material: str | bytes) -> Ed25519PrivateKey:
    """A PEM (PKCS#8) private key, or a 32-byte seed as hex or base64."""
    data = material.encode() if isinstance(material, str) else material
    if b"-----BEGIN" in data:
        key = serialization.load_pem_private_key(data, password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the signing key is not an Ed25519 key")
        return key
    seed = _seed(data.decode("ascii", errors="replace"))
    if seed is None:
        raise ValueError("the signing key is neither PEM nor a 32-byte hex/base64 seed")
    return Ed25519PrivateKey.from_private_bytes(seed)


def load_public_key(material: str | bytes | Path) -> Ed25519PublicKey:
    """A PEM public key, or 32 raw bytes as hex or base64 (a file path is read first)."""
    if isinstance(material, Path):
        material = material.read_bytes()
    data = material.encode() if isinstance(material, str) else material
    if b"-----BEGIN" in data:
        key = serialization.load_pem_public_key(data)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("the public key is not an Ed25519 key")
        return key
    raw = _seed(data.decode("ascii", errors="replace"))
    if raw is None:
        raise ValueError("the public key is neither PEM nor 32 bytes of hex/base64")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(private: Ed25519PrivateKey) -> bytes:
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True, slots=True)
class HeadSigner:
    private_key: Ed25519PrivateKey

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self.private_key.public_key()

    @property
    def key_id(self) -> str:
        return key_id(self.public_key)

    @property
    def public_hex(self) -> str:
        """The raw 32-byte public key in hex (``load_public_key`` reads it back)."""
        return self.public_key.public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        ).hex()

    def sign(self, tree_size: int, root_hash: str, signed_at: datetime) -> str:
        return self.private_key.sign(head_message(tree_size, root_hash, signed_at)).hex()


def verify_head_signature(
    public: Ed25519PublicKey, tree_size: int, root_hash: str, signed_at: datetime, signature: str
) -> bool:
    try:
        public.verify(bytes.fromhex(signature), head_message(tree_size, root_hash, signed_at))
    except (InvalidSignature, ValueError):
        return False
    return True
