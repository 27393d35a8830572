"""Ed25519 identities of rendezvous owners, and request signing.

An :class:`Identity` is the private key that owns a username. Files hold the raw 32-byte
seed as base64 on one line; :meth:`Identity.save` writes them with mode 0600 (created so,
never world-readable even for an instant) and :meth:`Identity.load` refuses a key file that
group or others can read.
"""

from __future__ import annotations

import base64
import os
import secrets
import stat
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from durasync.p2p.errors import InsecureKeyFile
from durasync.p2p.rendezvous import signing_payload

__all__ = ["Identity", "InsecureKeyFile"]

#: Header names of a signed request (docs/p2p.md "Signatures").
TIMESTAMP_HEADER = "Rendezvous-Timestamp"
NONCE_HEADER = "Rendezvous-Nonce"
SIGNATURE_HEADER = "Rendezvous-Signature"


class Identity:
    """An Ed25519 key pair that can own a username and sign requests."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._key = private_key
        raw = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        self.public_key = base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")
        """The public key as unpadded URL-safe base64 (what the server stores)."""

    @classmethod
    def generate(cls) -> Identity:
        """A new random identity."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load(cls, path: Path) -> Identity:
        """Read a key file written by :meth:`save`.

        Raises:
            FileNotFoundError: no such file.
            InsecureKeyFile: the file is readable by group or others.
            ValueError: the file does not hold a base64 32-byte seed.
        """
        mode = os.stat(path).st_mode
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise InsecureKeyFile(f"{path} is accessible by group/others: chmod 600 {path}")
        text = Path(path).read_text(encoding="ascii").strip()
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        if len(raw) != 32:
            raise ValueError(f"{path}: not an Ed25519 key (expected 32 bytes base64)")
        return cls(Ed25519PrivateKey.from_private_bytes(raw))

    @classmethod
    def load_or_create(cls, path: Path) -> Identity:
        """:meth:`load` the file, or :meth:`generate` and :meth:`save` it when absent."""
        try:
            return cls.load(path)
        except FileNotFoundError:
            identity = cls.generate()
            identity.save(path)
            return identity

    def save(self, path: Path) -> None:
        """Write the private key to ``path`` with mode 0600 (replacing an existing file)."""
        raw = self._key.private_bytes_raw()
        data = base64.urlsafe_b64encode(raw).rstrip(b"=") + b"\n"
        tmp = Path(f"{path}.tmp{secrets.token_hex(4)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)

    def sign(self, payload: bytes) -> str:
        """Signature of ``payload`` as unpadded URL-safe base64."""
        return base64.urlsafe_b64encode(self._key.sign(payload)).decode("ascii").rstrip("=")

    def sign_request(
        self, method: str, target: str, body: bytes, *, now: float | None = None
    ) -> dict[str, str]:
        """Headers that sign one request (see :func:`~durasync.p2p.rendezvous.signing_payload`).

        ``target`` is the path plus ``?query`` exactly as sent; a fresh random nonce is used.
        """
        ts = int((time.time() if now is None else now) * 1000)
        nonce = secrets.token_urlsafe(18)
        signature = self.sign(signing_payload(method, target, body, ts, nonce))
        return {TIMESTAMP_HEADER: str(ts), NONCE_HEADER: nonce, SIGNATURE_HEADER: signature}
