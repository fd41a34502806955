"""Sealed job files: payloads and results carry an HMAC-SHA256 under a per-cache secret key,
checked before anything in them is unpickled (by the job and by the client), so a pickle
planted in or altered under the cache is refused, never loaded.

A sealed file is ``MAGIC``, the key's id (16 hex digits), the 32-byte MAC of the data, then
the data. The key lives in ``<cache>/secret`` on the client (0600) and, where jobs run, in
``<files dir>/secrets/<id>`` (0600), ``<files dir>`` being the parent of the ``jobs``
directory. The client trusts only its cache's key; a job only the key file its script names
(:func:`job_key`), never another file found in ``secrets/`` by the id a sealed file gives.
Imported by the runner: standard library only.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import posixpath
import secrets
import time
from pathlib import Path

from . import trust
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


def unseal(sealed: bytes, key_for: KeyRing, where: str) -> tuple[bytes, bytes]:
    """The data of a sealed file and the key it is sealed with, after checking its MAC;
    IntegrityError if it is not sealed by a key this side holds, or was altered."""
    head = len(MAGIC) + ID_LEN + MAC_LEN
    if len(sealed) < head or not sealed.startswith(MAGIC):
        raise IntegrityError(
            f"{where} is not a sealed hpcexec file (planted or damaged); it "
            f"was not loaded. Resubmit the job (force=True) to write it again."
        )
    kid = sealed[len(MAGIC) : len(MAGIC) + ID_LEN].decode(errors="replace")
    key = key_for.get(kid)
    if key is None:
        raise IntegrityError(
            f"{where} is sealed with key {kid}, which this cache does not hold; it was not loaded"
        )
    mac, data = sealed[len(MAGIC) + ID_LEN : head], sealed[head:]
    if not hmac.compare_digest(mac, hmac.new(key, data, hashlib.sha256).digest()):
        raise IntegrityError(
            f"{where} fails its integrity check (altered or planted); it was "
            f"not loaded. Resubmit the job (force=True) to write it again."
        )
    return data, key


class KeyRing:
    """The keys one side trusts, by id: the client its cache's key, a job the one key file
    its script names. Never a key found by its name alone."""

    def __init__(self, *known: bytes) -> None:
        self._keys = {key_id(k): k for k in known}

    def get(self, kid: str) -> bytes | None:
        return self._keys.get(kid)


def key_path(files_dir: str, key: bytes) -> str:
    """Where the jobs' copy of ``key`` lives: ``<files dir>/secrets/<id>``."""
    return posixpath.join(files_dir, SECRETS, key_id(key))


def job_key(path: str | os.PathLike) -> bytes:
    """The key in the file a job's script names, after checking that the file and its
    directory are the user's and private and that the key's id is the file's name."""
    path = Path(path)
    try:
        trust.check(path.parent, "the keys directory")
        trust.check(path, "the job's key file", forbidden=trust.ANY_ACCESS)
        key = path.read_bytes()
    except FileNotFoundError as e:
        raise IntegrityError(
            f"the job's key file {path} does not exist; nothing was loaded. "
            f"Resubmit the job (force=True) to install it again."
        ) from e
    if key_id(key) != path.name:
        raise IntegrityError(
            f"the job's key file {path} is not the key its name says (planted "
            f"or damaged); nothing was loaded. Remove it and resubmit the job "
            f"(force=True) to install it again."
        )
    return key


def client_key(cache_dir: str | os.PathLike) -> bytes:
    """This cache's secret key, made (0600, 32 random bytes) the first time; two clients
    making it at once end up with the same one. One that others could read or write is
    repaired if it is the user's, else refused (:class:`UntrustedPath`)."""
    path = Path(cache_dir) / SECRET
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        trust.check(path, "the cache key", forbidden=trust.ANY_ACCESS, repair=True)
        for _ in range(100):  # the maker may still be writing it
            key = path.read_bytes()
            if len(key) == 32:
                return key
            time.sleep(0.01)
        raise IntegrityError(
            f"the cache key {path} is damaged; remove it (results sealed "
            f"with it can then no longer be read) and run again"
        ) from None
    key = secrets.token_bytes(32)
    with os.fdopen(fd, "wb") as f:
        f.write(key)
    return key
