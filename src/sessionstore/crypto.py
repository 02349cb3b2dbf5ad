"""Encryption at rest: AES-256-GCM for the ``data`` column; see docs/encryption.md."""

from __future__ import annotations

import hashlib
import os

try:
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
except ImportError as exc:  # an optional extra: say which
    raise ImportError(
        'encryption needs the crypto extra: pip install "sessionstore[crypto]"'
    ) from exc

__all__ = ["Keyring"]

#: This format: AES-256-GCM, a 4-byte key id, a 12-byte random nonce.
_FORMAT = b"\x01"
_KEY_SIZE = 32
_KEY_ID_SIZE = 4
_HEADER_SIZE = 1 + _KEY_ID_SIZE
_NONCE_SIZE = 12
_TAG_SIZE = 16


class Keyring:
    """The keys of a store's encryption at rest: the first encrypts, every one decrypts.

    Neither repr nor str shows a key.

    Args:
        *keys: 32-byte AES-256 keys (see `generate_key`), the one to encrypt with
            first. The same key given twice counts once.

    Raises:
        TypeError: If a key is not bytes.
        ValueError: If no key is given, a key is not 32 bytes long, or two
            different keys share a key id.
    """

    __slots__ = ("_ciphers", "_first", "prefix")

    def __init__(self, *keys: bytes) -> None:
        if not keys:
            raise ValueError("a Keyring needs at least one key (see Keyring.generate_key())")
        digests: dict[bytes, bytes] = {}
        self._ciphers: dict[bytes, AESGCM] = {}
        for position, key in enumerate(keys, 1):
            if not isinstance(key, bytes):
                raise TypeError(f"key {position} must be bytes, not {type(key).__name__}")
            if len(key) != _KEY_SIZE:
                raise ValueError(
                    f"key {position} is {len(key)} bytes long; AES-256 keys are "
                    f"{_KEY_SIZE} bytes (see Keyring.generate_key())"
                )
            digest = hashlib.sha256(key).digest()
            key_id = digest[:_KEY_ID_SIZE]
            if digests.setdefault(key_id, digest) != digest:
                raise ValueError(
                    f"key {position} shares its key id with another key; use a new key"
                )
            self._ciphers.setdefault(key_id, AESGCM(key))
        first_id = hashlib.sha256(keys[0]).digest()[:_KEY_ID_SIZE]
        self._first = self._ciphers[first_id]
        #: How every value this ring encrypts begins: the format byte and the first
        #: key's id. A value that begins otherwise is under another key.
        self.prefix = _FORMAT + first_id

    @staticmethod
    def generate_key() -> bytes:
        """Make a new random key: 32 bytes from the operating system's secure source."""
        return AESGCM.generate_key(bit_length=256)

    def __repr__(self) -> str:
        # Key ids only: they name keys in logs without revealing them.
        return f"<Keyring of {len(self._ciphers)} key(s), encrypting under {self.prefix[1:].hex()}>"

    def encrypt(self, data: bytes | bytearray | memoryview, associated_data: bytes) -> bytes:
        """The stored value of `data`: under the first key and a fresh random nonce.

        Decrypting needs the same `associated_data` (the stores pass the row's stored key).
        """
        nonce = os.urandom(_NONCE_SIZE)
        sealed = self._first.encrypt(nonce, data, self.prefix + associated_data)
        return self.prefix + nonce + sealed

    def decrypt(self, value: bytes, associated_data: bytes) -> bytes:
        """Decrypt a value `encrypt` made, with whichever key of the ring made it.

        Raises:
            ValueError: If the value is not in this format, its key is not in the
                ring, or it does not authenticate (changed, or made for other
                associated data). The message names no key and no data.
        """
        header = value[:_HEADER_SIZE]
        if header[:1] != _FORMAT or len(value) < _HEADER_SIZE + _NONCE_SIZE + _TAG_SIZE:
            raise ValueError("not in the encrypted format (written without encryption?)")
        cipher = self._ciphers.get(header[1:])
        if cipher is None:
            raise ValueError(f"encrypted under key id {header[1:].hex()}, not in the keyring")
        nonce = value[_HEADER_SIZE : _HEADER_SIZE + _NONCE_SIZE]
        try:
            return cipher.decrypt(
                nonce, value[_HEADER_SIZE + _NONCE_SIZE :], header + associated_data
            )
        except InvalidTag:
            raise ValueError(
                "does not authenticate (changed, or copied from another row)"
            ) from None
