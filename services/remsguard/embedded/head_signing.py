"""Embedded mode signs its own tree heads: a key made on the first start, a head every
``tree_head_interval_seconds`` and one at shutdown.

Files in the data directory:
- `tree-head-key.pem` (0600): the Ed25519 private key (PKCS#8 PEM), made on the first start
  unless `REMSGUARD_SIGNING_KEY` / `REMSGUARD_SIGNING_KEY_FILE` name one.
- `tree-head-key.pub.pem`: its public key, beside `first-run-tokens.txt`. Copy it off the
  machine: `remsguard audit verify --public-key` with it fails when the heads were deleted,
  do not match the records, or stop long before the newest record.

Someone who can read the data directory can read the private key too and sign heads over a
rewritten log; what such a rewrite cannot undo is a head (or the public key) an auditor kept
elsewhere (docs/SECURITY.md, "Tamper evidence").
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import structlog
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from remsguard.adapters.storage import ComplianceLog, HeadSigner
from remsguard.adapters.storage.signing import load_private_key, private_pem, public_pem
from remsguard.config import Settings

__all__ = ["PRIVATE_KEY_FILE", "PUBLIC_KEY_FILE", "HeadSigningTask", "SigningKey", "signing_key"]

log = structlog.get_logger(__name__)

PRIVATE_KEY_FILE: Final = "tree-head-key.pem"
PUBLIC_KEY_FILE: Final = "tree-head-key.pub.pem"


@dataclass(frozen=True, slots=True)
class SigningKey:
    signer: HeadSigner
    public_path: Path
    created: bool  # made by this start (the first one): `remsguard up` prints it


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def signing_key(settings: Settings, data_dir: Path) -> SigningKey:
    """The configured key, else the data directory's (made now if there is none yet); its
    public key is (re)written beside the tokens."""
    private = data_dir / PRIVATE_KEY_FILE
    public = data_dir / PUBLIC_KEY_FILE
    created = False
    if settings.signing_key is not None:
        key = load_private_key(settings.signing_key.get_secret_value())
    elif settings.signing_key_file is not None:
        key = load_private_key(settings.signing_key_file.read_bytes())
    elif private.exists():
        key = load_private_key(private.read_bytes())
    else:
        key = Ed25519PrivateKey.generate()
        _write(private, private_pem(key), 0o600)
        created = True
    pem = public_pem(key.public_key())
    if not public.exists() or public.read_bytes() != pem:
        public.unlink(missing_ok=True)
        _write(public, pem, 0o644)
    return SigningKey(HeadSigner(key), public, created)


@dataclass
class HeadSigningTask:
    """Signs a head over the whole log every `interval` seconds (nothing new: no new head)
    and once more at `stop`, in worker threads."""

    log: ComplianceLog
    key: SigningKey
    interval: float
    _task: asyncio.Task[None] | None = field(default=None, init=False)
    _stop: asyncio.Event = field(default_factory=asyncio.Event, init=False)

    async def sign(self) -> None:
        try:
            head = await asyncio.to_thread(self.log.sign_head, self.key.signer)
        except Exception:
            log.exception("tree_head.sign_failed")
            return
        log.debug("tree_head.signed", tree_size=head.tree_size, root=head.root_hash)

    def start(self) -> None:
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name="remsguard-tree-heads")

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self.sign()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), timeout=self.interval)

    async def stop(self) -> None:
        """Stop the timer and sign what the log holds now (call after the last writer)."""
        if self._task is not None:
            self._stop.set()
            await self._task
            self._task = None
        await self.sign()
