"""The payload view's lexer: its text is the payload's text, whatever the payload."""

from __future__ import annotations

import hashlib

import pytest

from ppos.portal.filters import inert
from ppos.portal.payload import hex_dump, highlight_json, view_payload
from tests.portal.support import EXACT_PAYLOAD, text_of

ODD_TEXTS = [
    EXACT_PAYLOAD.decode(),
    '{"a":1e400,"a":-0.0,"b":123456789012345678901234567890}',
    '{"unterminated": "abc',
    "not json at all <b>&amp;</b>",
    '{"esc":"\\"\\\\\\u0000","k" : [ true , false , null ]}',
    "\n\n  leading newlines and \t tabs\r\n",
    '{"bidi":"\u202eevil\u202c","zw":"a\u200bb","ctl":"\x01\x7f"}',
    "",
]


@pytest.mark.parametrize("text", ODD_TEXTS)
def test_the_highlighted_view_shows_exactly_the_text(text: str) -> None:
    assert text_of(str(highlight_json(text))) == text


def test_numbers_and_repeated_keys_are_spans_of_their_own_text() -> None:
    html = str(highlight_json('{"dup":1e400,"dup":123456789012345678901234567890}'))
    assert '<span class="j-number">1e400</span>' in html
    assert '<span class="j-number">123456789012345678901234567890</span>' in html
    assert html.count('<span class="j-key">&#34;dup&#34;</span>') == 2


def test_markup_and_bidi_controls_are_inert() -> None:
    html = str(highlight_json('{"x":"<img src=x onerror=alert(1)>\u202e"}'))
    assert "<img" not in html
    assert '<span class="ctl" title="U+202E">\u202e</span>' in html
    assert str(inert("a\u202eb<i>")) == "a\\u202eb&lt;i&gt;"
    assert "cut at 5 characters" in str(inert("x" * 10, 5))


def test_bytes_that_are_not_utf8_are_flagged_and_hexed() -> None:
    data = b'{"a":"\xff\xfe"}'
    view = view_payload(data)
    assert not view.text_is_exact
    assert view.sha256 == hashlib.sha256(data).hexdigest()
    assert view.hex_lines == [
        '00000000  7b 22 61 22 3a 22 ff fe 22 7d                    |{"a":".."}|'
    ]
    assert len(hex_dump(b"x" * 100, limit=32)) == 2
