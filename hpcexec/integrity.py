"""Sealed job files: payloads and results carry an HMAC-SHA256 under a per-cache secret key,
checked before anything in them is unpickled (by the job and by the client), so a pickle
planted in or altered under the cache is refused, never loaded.

A sealed file is ``MAGIC``, the key's id (16 hex digits), the 32-byte MAC of the data, then
the data. The key lives in ``<cache>/secret`` on the client (0600) and, where jobs run, in
``<files dir>/secrets/<id>`` (0600), ``<files dir>`` being the parent of the ``jobs``
directory. Imported by the runner: standard library only.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path

from .errors import IntegrityError

MAGIC = b"HXS1"
ID_LEN = 16
MAC_LEN = 32
SECRET = "secret"
SECRETS = "secrets"


def key_id(key: bytes) -> str:
    return hashlib.sha256(b"hpcexec key id\0" + key).hexdigest()[:ID_LEN]


def seal(key: bytes, data: bytes) -> bytes:
    """``data`` with its header: magic, key id, MAC."""
    return MAGIC + key_id(key).encode() + hmac.new(key, data, hashlib.sha256).digest() + data


def unseal(sealed: bytes, key_for: "KeyRing", where: str) -> tuple[bytes, bytes]:
    """The data of a sealed file and the key it is sealed with, after checking its MAC;
    IntegrityError if it is not sealed by a key this side holds, or was altered."""
    head = len(MAGIC) + ID_LEN + MAC_LEN
    if len(sealed) < head or not sealed.startswith(MAGIC):
        raise IntegrityError(f"{where} is not a sealed hpcexec file (planted or damaged); it "
                             f"was not loaded. Resubmit the job (force=True) to write it again.")
    kid = sealed[len(MAGIC):len(MAGIC) + ID_LEN].decode(errors="replace")
    key = key_for.get(kid)
    if key is None:
        raise IntegrityError(f"{where} is sealed with key {kid}, which this cache does not "
                             f"hold; it was not loaded")
    mac, data = sealed[len(MAGIC) + ID_LEN:head], sealed[head:]
    if not hmac.compare_digest(mac, hmac.new(key, data, hashlib.sha256).digest()):
        raise IntegrityError(f"{where} fails its integrity check (altered or planted); it was "
                             f"not loaded. Resubmit the job (force=True) to write it again.")
    return data, key


class KeyRing:
    """The keys of one files directory (``<dir>/secrets/<id>``), read when first needed."""

    def __init__(self, files_dir: str | os.PathLike, *known: bytes) -> None:
        self.dir = Path(files_dir) / SECRETS
        self._keys = {key_id(k): k for k in known}

    def get(self, kid: str) -> bytes | None:
        if kid not in self._keys:
            if not (len(kid) == ID_LEN and all(c in "0123456789abcdef" for c in kid)):
                return None
            try:
                key = (self.dir / kid).read_bytes()
            except OSError:
                return None
            if key_id(key) != kid:
                return None
            self._keys[kid] = key
        return self._keys[kid]


def client_key(cache_dir: str | os.PathLike) -> bytes:
    """This cache's secret key, made (0600, 32 random bytes) the first time; two clients
    making it at once end up with the same one."""
    path = Path(cache_dir) / SECRET
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(100):  # the maker may still be writing it
            key = path.read_bytes()
            if len(key) == 32:
                return key
            time.sleep(0.01)
        raise IntegrityError(f"the cache key {path} is damaged; remove it (results sealed "
                             f"with it can then no longer be read) and run again")
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key
