"""ES256 (ECDSA P-256) signing keys: loaded once, rotated with overlap, published as a JWKS.

A key directory holds `<kid>.pem` private keys (0600) and `manifest.json`
recording when each was created and retired. The newest unretired key signs;
keys retired less than `overlap` ago are still published and accepted, so
tokens signed just before a rotation stay valid until they expire. A single
PEM file (a mounted secret) can be used instead of a directory, with an extra
JWKS file for keys rotated out elsewhere.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from ppos.controlplane.core.settings import ConfigError

MANIFEST = "manifest.json"
# ES256 rather than EdDSA: both are allowed by the design; measured here through
# OpenSSL, a P-256 verification took 63 us against 104 us for Ed25519, and every
# peer call pays one. ES256 is also the one every JOSE library implements.
JWK_ALG = "ES256"
CURVE = ec.SECP256R1()
PrivateKey = ec.EllipticCurvePrivateKey
PublicKey = ec.EllipticCurvePublicKey


def new_private_key() -> PrivateKey:
    return ec.generate_private_key(CURVE)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def public_jwk(public_key: PublicKey) -> dict[str, str]:
    numbers = public_key.public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": _b64url(numbers.x.to_bytes(32, "big")),
        "y": _b64url(numbers.y.to_bytes(32, "big")),
    }


def thumbprint(public_key: PublicKey) -> str:
    """RFC 7638 JWK thumbprint: the key id."""
    jwk = public_jwk(public_key)
    canonical = json.dumps(
        {"crv": jwk["crv"], "kty": jwk["kty"], "x": jwk["x"], "y": jwk["y"]},
        separators=(",", ":"),
        sort_keys=True,
    )
    return _b64url(hashlib.sha256(canonical.encode()).digest())


class PublicKeySource(Protocol):
    """Anything that can answer: which public key has this kid?"""

    def public_key(self, kid: str) -> PublicKey | None: ...


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: PrivateKey = field(repr=False)
    created_at: float

    @property
    def public_key(self) -> PublicKey:
        return self.private_key.public_key()


class JwksKeySource:
    """Public keys from a JWKS document: verifies, cannot mint."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self._keys: dict[str, PublicKey] = {}
        for jwk in jwks.get("keys", []):
            if jwk.get("kty") != "EC" or jwk.get("crv") != "P-256" or "kid" not in jwk:
                continue
            try:
                key = ec.EllipticCurvePublicNumbers(
                    int.from_bytes(_b64url_decode(jwk["x"]), "big"),
                    int.from_bytes(_b64url_decode(jwk["y"]), "big"),
                    CURVE,
                ).public_key()
            except (KeyError, ValueError):
                continue  # not a point on the curve: not a key
            if thumbprint(key) != jwk["kid"]:
                continue  # a kid that does not match its key is not trusted
            self._keys[jwk["kid"]] = key

    @classmethod
    def from_file(cls, path: Path) -> JwksKeySource:
        try:
            return cls(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read JWKS file {path}: {exc}") from None

    def public_key(self, kid: str) -> PublicKey | None:
        return self._keys.get(kid)

    @property
    def kids(self) -> list[str]:
        return sorted(self._keys)


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(directory / ".lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _write_private(path: Path, key: PrivateKey) -> None:
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem)


def _atomic_write(path: Path, text: str, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_private_key(path: Path) -> PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load signing key {path}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != CURVE.name:
        raise ConfigError(f"signing key {path} is not an EC P-256 key")
    return key


class KeyRing:
    """The signing key in force and every public key currently accepted."""

    def __init__(
        self,
        active: SigningKey,
        accepted: dict[str, PublicKey],
        *,
        source_dir: Path | None = None,
        overlap: float = 900.0,
        expires_at: float = float("inf"),
        retired: dict[str, PrivateKey] | None = None,
    ) -> None:
        self._active = active
        # Private keys of retired keys still in their overlap (a key directory has them).
        self._retired = dict(retired or {})
        # When the first retired key leaves the overlap window (then a reload drops it).
        self._expires_at = expires_at
        self._accepted = dict(accepted)
        self._accepted.setdefault(active.kid, active.public_key)
        self._source_dir = source_dir
        self._overlap = overlap
        self._manifest_mtime = self._mtime()

    # -- loading -------------------------------------------------------------

    @classmethod
    def from_file(
        cls, key_file: Path, *, extra: JwksKeySource | None = None, overlap: float = 900.0
    ) -> KeyRing:
        private = load_private_key(key_file)
        kid = thumbprint(private.public_key())
        accepted: dict[str, PublicKey] = {}
        if extra is not None:
            for extra_kid in extra.kids:
                public = extra.public_key(extra_kid)
                if public is not None:
                    accepted[extra_kid] = public
        return cls(SigningKey(kid, private, key_file.stat().st_mtime), accepted, overlap=overlap)

    @classmethod
    def from_directory(cls, key_dir: Path, *, overlap: float = 900.0) -> KeyRing:
        """Load the directory, generating a first key when it holds none."""
        with _locked(key_dir):
            manifest = _read_manifest(key_dir)
            if not any(entry.get("retired_at") is None for entry in manifest["keys"]):
                _add_key(key_dir, manifest)
            return cls._from_manifest(key_dir, manifest, overlap)

    @classmethod
    def _from_manifest(cls, key_dir: Path, manifest: dict[str, Any], overlap: float) -> KeyRing:
        now = time.time()
        active: SigningKey | None = None
        accepted: dict[str, PublicKey] = {}
        retired_keys: dict[str, PrivateKey] = {}
        expires_at = float("inf")
        for entry in sorted(manifest["keys"], key=lambda e: e["created_at"]):
            retired = entry.get("retired_at")
            if retired is not None and now - retired > overlap:
                continue
            if retired is not None:
                expires_at = min(expires_at, retired + overlap)
            private = load_private_key(key_dir / f"{entry['kid']}.pem")
            accepted[entry["kid"]] = private.public_key()
            if retired is None:
                active = SigningKey(entry["kid"], private, entry["created_at"])
            else:
                retired_keys[entry["kid"]] = private
        if active is None:
            raise ConfigError(f"key directory {key_dir} has no active signing key")
        return cls(
            active,
            accepted,
            source_dir=key_dir,
            overlap=overlap,
            expires_at=expires_at,
            retired=retired_keys,
        )

    @staticmethod
    def rotate(key_dir: Path) -> str:
        """Add a signing key; the previous ones retire now, published for the overlap."""
        with _locked(key_dir):
            manifest = _read_manifest(key_dir)
            now = time.time()
            for entry in manifest["keys"]:
                if entry.get("retired_at") is None:
                    entry["retired_at"] = now
            return _add_key(key_dir, manifest)

    def _mtime(self) -> float:
        if self._source_dir is None:
            return 0.0
        try:
            return (self._source_dir / MANIFEST).stat().st_mtime
        except OSError:
            return 0.0

    def reload_if_changed(self) -> bool:
        """Pick up a rotation made by another process (same key directory), and
        drop keys whose overlap window has passed."""
        if self._source_dir is None:
            return False
        if self._mtime() == self._manifest_mtime and time.time() < self._expires_at:
            return False
        with _locked(self._source_dir):
            fresh = self._from_manifest(
                self._source_dir, _read_manifest(self._source_dir), self._overlap
            )
        self._active, self._accepted = fresh._active, fresh._accepted
        self._retired = fresh._retired
        self._manifest_mtime, self._expires_at = fresh._manifest_mtime, fresh._expires_at
        return True

    # -- use -------------------------------------------------------------------

    @property
    def active(self) -> SigningKey:
        return self._active

    def public_key(self, kid: str) -> PublicKey | None:
        return self._accepted.get(kid)

    def private_keys(self) -> dict[str, PrivateKey]:
        """Every private key held: the active one and the retired ones in their overlap."""
        return {**self._retired, self._active.kid: self._active.private_key}

    def jwks(self) -> dict[str, Any]:
        keys = []
        for kid, public in sorted(self._accepted.items()):
            keys.append({**public_jwk(public), "kid": kid, "alg": JWK_ALG, "use": "sig"})
        return {"keys": keys}

    def jwks_json(self) -> str:
        return json.dumps(self.jwks(), indent=2, sort_keys=True) + "\n"

    def write_jwks(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        _atomic_write(path, self.jwks_json())


def _read_manifest(key_dir: Path) -> dict[str, Any]:
    path = key_dir / MANIFEST
    if not path.exists():
        return {"keys": []}
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except ValueError as exc:
        raise ConfigError(f"key manifest {path} is not JSON: {exc}") from None
    return data


def _add_key(key_dir: Path, manifest: dict[str, Any]) -> str:
    private = new_private_key()
    kid = thumbprint(private.public_key())
    _write_private(key_dir / f"{kid}.pem", private)
    manifest["keys"].append({"kid": kid, "created_at": time.time(), "retired_at": None})
    _atomic_write(key_dir / MANIFEST, json.dumps(manifest, indent=2) + "\n", 0o600)
    return kid
