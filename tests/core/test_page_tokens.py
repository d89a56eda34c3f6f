"""The page-token codec: round trips, and every altered, foreign, stale or hostile
token refused as INVALID_ARGUMENT on page_token (never another exception)."""

from __future__ import annotations

import base64
import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

import pytest

from ppos.controlplane.core.errors import InvalidArgument
from ppos.controlplane.core.pagination import (
    MAX_TOKEN_CHARS,
    STALE,
    TOKEN_LIFETIME,
    Ident,
    Instant,
    Integer,
    Listing,
    PageTokens,
    Text,
)
from tests.support.page_tokens import HOSTILE, b64, random_tokens

METHOD = "/test.v1.Things/ListThings"
THINGS = Listing(METHOD, Instant("created_at"), Ident("thing_id"))
OTHERS = Listing("/test.v1.Things/ListOthers", Instant("created_at"), Ident("thing_id"))
COUNTED = Listing("/test.v1.Things/ListCounted", Integer("after", low=0, high=10))
FILTERS = {"states": ["ACTIVE"], "region": "eu-west-1"}
WHEN = dt.datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=dt.UTC)
NOW = 1_800_000_000.0


class FixedKeys:
    """MacKeys holding the given keys; counts look-ups (to prove what was never read)."""

    def __init__(self, *keys: tuple[bytes, bytes]) -> None:
        self._keys = list(keys)
        self.lookups = 0

    def signing_key(self) -> tuple[bytes, bytes]:
        return self._keys[0]

    def key(self, key_id: bytes) -> bytes | None:
        self.lookups += 1
        return next((key for ident, key in self._keys if ident == key_id), None)


KEY = (b"key-one!", b"k" * 32)
OTHER_KEY = (b"key-two!", b"x" * 32)


def codec(*keys: tuple[bytes, bytes], now: float = NOW) -> PageTokens:
    return PageTokens(FixedKeys(*(keys or (KEY,))), clock=lambda: now)


def refusal(
    tokens: PageTokens,
    token: str,
    listing: Listing = THINGS,
    filters: Mapping[str, Any] = FILTERS,
) -> str:
    """The description of the page_token violation `token` is refused with."""
    with pytest.raises(InvalidArgument) as caught:
        tokens.read(listing, filters, token)
    [violation] = caught.value.violations
    assert violation.field == "page_token"
    return violation.description


def test_round_trip_keeps_every_type_exactly() -> None:
    tokens = codec()
    token = tokens.issue(THINGS, FILTERS, (WHEN, "dec_01jabcdefghjkmnpqrstvwxyz"))
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token), "unpadded base64url"
    created, ident = tokens.read(THINGS, FILTERS, token) or ()
    assert created == WHEN
    assert created.tzinfo is not None
    assert ident == "dec_01jabcdefghjkmnpqrstvwxyz"
    assert tokens.read(COUNTED, {}, tokens.issue(COUNTED, {}, (10,))) == (10,)
    assert tokens.read(THINGS, FILTERS, "") is None, "no token: the first page"


def test_an_instant_in_another_zone_reads_back_as_the_same_instant_in_utc() -> None:
    tokens = codec()
    local = WHEN.astimezone(dt.timezone(dt.timedelta(hours=-5)))
    [created, _] = tokens.read(THINGS, FILTERS, tokens.issue(THINGS, FILTERS, (local, "a"))) or ()
    assert created == WHEN
    assert created.utcoffset() == dt.timedelta(0)


def test_filter_order_of_keys_does_not_matter() -> None:
    tokens = codec()
    token = tokens.issue(THINGS, {"a": 1, "b": 2}, (WHEN, "a"))
    assert tokens.read(THINGS, {"b": 2, "a": 1}, token) == (WHEN, "a")


def test_every_altered_byte_is_refused() -> None:
    tokens = codec()
    token = tokens.issue(THINGS, FILTERS, (WHEN, "thing-1"))
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    for index in range(len(raw)):
        for flip in (0x01, 0x80):
            altered = bytearray(raw)
            altered[index] ^= flip
            forged = base64.urlsafe_b64encode(bytes(altered)).rstrip(b"=").decode()
            refusal(tokens, forged)
    for cut in (1, 5, len(token) - 1):
        refusal(tokens, token[:cut])
    refusal(tokens, token + "A")
    refusal(tokens, token + "AAAA")


def test_a_token_of_another_list_or_other_filters_is_refused() -> None:
    tokens = codec()
    token = tokens.issue(OTHERS, FILTERS, (WHEN, "thing-1"))
    assert "another list" in refusal(tokens, token)
    token = tokens.issue(THINGS, {**FILTERS, "region": "us-east-1"}, (WHEN, "thing-1"))
    assert "other filters" in refusal(tokens, token)


def test_a_token_of_another_deployment_is_refused_as_not_ours() -> None:
    theirs = codec(OTHER_KEY).issue(THINGS, FILTERS, (WHEN, "thing-1"))
    assert refusal(codec(KEY), theirs) == STALE
    # Same key id, other key: the MAC fails.
    impostor = codec((KEY[0], OTHER_KEY[1])).issue(THINGS, FILTERS, (WHEN, "thing-1"))
    assert "not a page token issued by this server" in refusal(codec(KEY), impostor)


def test_expired_and_future_tokens_are_stale() -> None:
    token = codec(now=NOW).issue(THINGS, FILTERS, (WHEN, "thing-1"))
    assert codec(now=NOW + TOKEN_LIFETIME).read(THINGS, FILTERS, token) is not None
    assert refusal(codec(now=NOW + TOKEN_LIFETIME + 1), token) == STALE
    assert refusal(codec(now=NOW - 3600), token) == STALE, "issued an hour in the future"


def test_tokens_under_a_retired_key_read_until_the_key_is_gone() -> None:
    old = codec(KEY).issue(THINGS, FILTERS, (WHEN, "thing-1"))
    rotated = codec(OTHER_KEY, KEY)  # signs with the new key, still holds the old one
    assert rotated.read(THINGS, FILTERS, old) == (WHEN, "thing-1")
    assert refusal(codec(OTHER_KEY), old) == STALE


@pytest.mark.parametrize(
    ("issued_with", "value"),
    [
        (Listing(METHOD, Integer("a", low=-(2**63))), (-1,)),  # an instant before 1970
        (Listing(METHOD, Integer("a", high=2**63 - 1)), (2**63 - 1,)),  # after 9999
        (Listing(METHOD, Ident("a", re.compile(r".+"), 200)), ("x" * 129,)),  # a long id
        (Listing(METHOD, Ident("a", re.compile(r".+"))), ("a b",)),  # outside the id set
        (Listing(METHOD, Ident("a", re.compile(r".+"))), ("'; drop table x;--",)),
        (Listing(METHOD, Instant("a"), Ident("b"), Ident("c")), (WHEN, "a", "b")),  # extra
        (Listing(METHOD, Instant("a")), (WHEN,)),  # too short
    ],
)
def test_a_sealed_position_of_the_wrong_shape_is_refused(
    issued_with: Listing, value: tuple[object, ...]
) -> None:
    """Even a token this server sealed is read only as its listing's exact types."""
    tokens = codec()
    token = tokens.issue(issued_with, FILTERS, value)
    assert refusal(tokens, token) == STALE


def test_integers_are_read_only_within_their_range() -> None:
    tokens = codec()
    wide = Listing(COUNTED.method, Integer("after", low=-5, high=100))
    for value in (-1, 11, 100):
        assert refusal(tokens, tokens.issue(wide, {}, (value,)), COUNTED, {}) == STALE


@pytest.mark.parametrize(
    "position",
    [
        (WHEN.replace(tzinfo=None), "thing-1"),  # a naive datetime
        ("2026-03-01T12:30:15", "thing-1"),
        (WHEN, 7),
        (WHEN, "a" * 129),
        (WHEN, "white space"),
        (WHEN, "\x00"),
        (WHEN,),
        (WHEN, "thing-1", "extra"),
    ],
)
def test_issuing_a_position_its_listing_does_not_describe_is_a_server_bug(
    position: tuple[object, ...],
) -> None:
    with pytest.raises(ValueError, match="ListThings"):
        codec().issue(THINGS, FILTERS, position)


def test_text_fields_carry_any_printable_text_within_their_bound() -> None:
    """Sort keys such as container images (slashes, colons, '@'; any script)."""
    tokens = codec()
    listing = Listing(METHOD, Text("image", max_bytes=64), Ident("thing_id"))
    for image in ("registry.example/ppos/agent:1.2@sha256", "", "Übersetzer/日本:1"):
        token = tokens.issue(listing, FILTERS, (image, "thing-1"))
        assert tokens.read(listing, FILTERS, token) == (image, "thing-1")
    for bad in ("a" * 65, "tab\there", "\u202e", 7):
        with pytest.raises(ValueError, match="ListThings"):
            tokens.issue(listing, FILTERS, (bad, "thing-1"))
    wide = Listing(METHOD, Text("image", max_bytes=100), Ident("thing_id"))
    long_one = tokens.issue(wide, FILTERS, ("a" * 65, "thing-1"))
    assert refusal(tokens, long_one, listing) == STALE  # sealed, but over the bound


@pytest.mark.parametrize("value", [True, -1, 11, 1.5, "3", None])
def test_integer_fields_take_ints_in_range_only(value: object) -> None:
    with pytest.raises(ValueError, match="ListCounted"):
        codec().issue(COUNTED, {}, (value,))


@pytest.mark.parametrize("token", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_tokens_are_invalid_arguments(token: str) -> None:
    refusal(codec(), token)


def test_random_bytes_are_invalid_arguments() -> None:
    tokens = codec()
    for token in random_tokens(18, 2000):
        refusal(tokens, token)


def test_oversize_and_deeply_nested_tokens_are_refused_before_any_key_is_read() -> None:
    keys = FixedKeys(KEY)
    tokens = PageTokens(keys, clock=lambda: NOW)
    for token in ("A" * (MAX_TOKEN_CHARS + 1), "A" * 10**6, b64(b"[" * 5000 + b"]" * 5000)):
        refusal(tokens, token)
    assert keys.lookups == 0, "refused on length alone, before decoding"


def test_a_listing_needs_a_full_method_name_and_a_position() -> None:
    with pytest.raises(ValueError, match="full method name"):
        Listing("ListThings", Ident("a"))
    with pytest.raises(ValueError, match="full method name"):
        Listing(METHOD)
    with pytest.raises(ValueError, match="1 to 255"):
        Ident("a", max_length=256)
