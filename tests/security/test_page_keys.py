"""Page-token keys derived from the deployment's signing keys: the same on every
replica that shares them, following rotations, and stale once a key is gone."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pytest

from ppos.controlplane.core.errors import InvalidArgument
from ppos.controlplane.core.pagination import STALE, Ident, Instant, Listing, PageTokens
from ppos.controlplane.runtime.modules import page_tokens_of
from ppos.controlplane.security.keys import KeyRing
from ppos.controlplane.security.page_keys import derive_mac_key

LISTING = Listing("/test.v1.Things/ListThings", Instant("created_at"), Ident("thing_id"))
FILTERS = {"region": "eu-west-1"}
POSITION = (dt.datetime(2026, 3, 1, tzinfo=dt.UTC), "thing-1")


def stale(tokens: PageTokens, token: str) -> bool:
    with pytest.raises(InvalidArgument) as caught:
        tokens.read(LISTING, FILTERS, token)
    [violation] = caught.value.violations
    return violation.field == "page_token" and violation.description == STALE


def _touch_manifest(key_dir: Path) -> None:
    """Make the manifest look changed to a ring that polls its mtime."""
    manifest = key_dir / "manifest.json"
    later = manifest.stat().st_mtime + 5
    os.utime(manifest, (later, later))


def test_replicas_sharing_a_key_directory_read_each_others_tokens(tmp_path: Path) -> None:
    one = page_tokens_of(KeyRing.from_directory(tmp_path / "keys"))
    two = page_tokens_of(KeyRing.from_directory(tmp_path / "keys"))
    assert two.read(LISTING, FILTERS, one.issue(LISTING, FILTERS, POSITION)) == POSITION
    assert one.read(LISTING, FILTERS, two.issue(LISTING, FILTERS, POSITION)) == POSITION


def test_replicas_sharing_a_key_file_read_each_others_tokens(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    ring = KeyRing.from_directory(key_dir)
    key_file = key_dir / f"{ring.active.kid}.pem"
    one = page_tokens_of(KeyRing.from_file(key_file))
    two = page_tokens_of(KeyRing.from_file(key_file))
    assert two.read(LISTING, FILTERS, one.issue(LISTING, FILTERS, POSITION)) == POSITION


def test_another_deployment_cannot_read_or_forge_tokens(tmp_path: Path) -> None:
    ours = page_tokens_of(KeyRing.from_directory(tmp_path / "ours"))
    theirs = page_tokens_of(KeyRing.from_directory(tmp_path / "theirs"))
    assert stale(ours, theirs.issue(LISTING, FILTERS, POSITION))


def test_the_mac_key_is_derived_not_the_signing_key_itself(tmp_path: Path) -> None:
    ring = KeyRing.from_directory(tmp_path / "keys")
    scalar = ring.active.private_key.private_numbers().private_value.to_bytes(32, "big")
    derived = derive_mac_key(ring.active.private_key)
    assert len(derived) == 32
    assert derived != scalar
    assert derived == derive_mac_key(ring.active.private_key), "deterministic"
    other = KeyRing.from_directory(tmp_path / "other").active.private_key
    assert derive_mac_key(other) != derived


def test_a_rotation_keeps_old_tokens_during_the_overlap(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    ring = KeyRing.from_directory(key_dir, overlap=900)
    tokens = page_tokens_of(ring)
    before = tokens.issue(LISTING, FILTERS, POSITION)
    KeyRing.rotate(key_dir)
    _touch_manifest(key_dir)
    assert ring.reload_if_changed()
    after = tokens.issue(LISTING, FILTERS, POSITION)
    assert after[:12] != before[:12], "new tokens carry the new key's id"
    assert tokens.read(LISTING, FILTERS, before) == POSITION, "retired key still in overlap"
    assert tokens.read(LISTING, FILTERS, after) == POSITION
    # A replica that loads the directory after the rotation reads both as well.
    fresh = page_tokens_of(KeyRing.from_directory(key_dir, overlap=900))
    assert fresh.read(LISTING, FILTERS, before) == POSITION


def test_tokens_under_a_key_past_its_overlap_are_stale(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    ring = KeyRing.from_directory(key_dir, overlap=0.01)
    tokens = page_tokens_of(ring)
    before = tokens.issue(LISTING, FILTERS, POSITION)
    KeyRing.rotate(key_dir)
    _touch_manifest(key_dir)
    time.sleep(0.05)  # past the overlap window (a tiny one; no timing is asserted)
    assert ring.reload_if_changed()
    assert stale(tokens, before)
    assert tokens.read(LISTING, FILTERS, tokens.issue(LISTING, FILTERS, POSITION)) == POSITION
