"""The validation vocabulary: character sets, lengths, numbers, free text, sizes."""

from __future__ import annotations

import pytest

from ppos.controlplane.core.errors import InvalidArgument
from ppos.controlplane.core.ids import new_id, ulid
from ppos.controlplane.core.validation import (
    AUDIT_RESOURCE_ID,
    CLUSTER_NAME,
    DIGEST,
    HOSTNAME,
    IMAGE_REFERENCE,
    MAX_LABELS,
    MAX_REASON,
    OBJECT_ID,
    REGION_NAME,
    RESOURCE_KIND,
    RESOURCE_NAME,
    RESOURCE_VERSION,
    Syntax,
    Violations,
    ascii_decimal,
    ascii_digits,
    map_key_path,
    shown,
    text_problem,
)
from ppos.controlplane.services.governance.outbox.commands import idempotency_key
from ppos.controlplane.services.registry_sync.verify import JOB_ID

DIGEST_VALUE = "sha256:" + "ab" * 32

# Values the code, tests and docs use: each must stay valid.
ACCEPTED: list[tuple[Syntax, str]] = [
    (RESOURCE_NAME, "acme"),
    (RESOURCE_NAME, "shop-a"),
    (RESOURCE_NAME, "queue-1"),
    (RESOURCE_NAME, f"rt-{ulid()}"),
    (RESOURCE_NAME, "a" * 63),
    (OBJECT_ID, "job_1779116602472_1d246"),
    (OBJECT_ID, "fix_1779116602946"),
    (OBJECT_ID, "node_01jd3v6k2m8x9q4r5s6t7v8w9y"),
    (OBJECT_ID, new_id("node")),
    (OBJECT_ID, new_id("cmd")),
    (OBJECT_ID, new_id("swp")),
    (OBJECT_ID, new_id("job")),
    (OBJECT_ID, "gateway:eu-west-1"),
    (OBJECT_ID, "noderegistry"),
    (OBJECT_ID, f"{new_id('job')}:{new_id('node')}"),
    (OBJECT_ID, idempotency_key("x" * 200)),
    (OBJECT_ID, "X" * 128),
    (REGION_NAME, "eu-west-1"),
    (REGION_NAME, "us-east-2"),
    (CLUSTER_NAME, "c1"),
    (HOSTNAME, "worker-1"),
    (HOSTNAME, "host-eu-west-1"),
    (HOSTNAME, "a"),
    (HOSTNAME, "node7.rack-2.example.com"),
    (IMAGE_REFERENCE, "registry.example/ppos/preflight-worker:7.4.1"),
    (IMAGE_REFERENCE, "registry.printprice.example/preflight-engine:15.1.2"),
    (IMAGE_REFERENCE, "localhost:5000/team/image@" + DIGEST_VALUE),
    (IMAGE_REFERENCE, "w:1"),
    (IMAGE_REFERENCE, "Im0_0"),
    (DIGEST, DIGEST_VALUE),
    (RESOURCE_VERSION, "1"),
    (RESOURCE_VERSION, "9" * 18),
    (RESOURCE_KIND, "sync_sweep"),
    (RESOURCE_KIND, "node_health_sweep"),
    (AUDIT_RESOURCE_ID, "acme/q1"),
    (AUDIT_RESOURCE_ID, "2026-12-05T17:00:00.123456+00:00"),
]

REFUSED: list[tuple[Syntax, str]] = [
    (RESOURCE_NAME, "q1"),
    (RESOURCE_NAME, "Acme"),
    (RESOURCE_NAME, "-acme"),
    (RESOURCE_NAME, "acme-"),
    (RESOURCE_NAME, "a" * 64),
    (RESOURCE_NAME, "ac\u200bme"),
    (OBJECT_ID, "bad id!"),
    (OBJECT_ID, "_leading"),
    (OBJECT_ID, "X" * 129),
    (OBJECT_ID, "node\x00"),
    (OBJECT_ID, "job\n"),
    (OBJECT_ID, "j\u00f6b"),
    (REGION_NAME, "EU"),
    (REGION_NAME, "1eu"),
    (REGION_NAME, "eu-west-1\x00"),
    (REGION_NAME, "e"),
    (HOSTNAME, "worker-"),
    (HOSTNAME, "-worker"),
    (HOSTNAME, "work\u200ber"),
    (HOSTNAME, "a..b"),
    (HOSTNAME, "a" * 64),
    (HOSTNAME, ".".join(["a" * 63] * 4)),
    (HOSTNAME, "worker_1"),
    (IMAGE_REFERENCE, "registry.example/w:1\x1b[31m"),
    (IMAGE_REFERENCE, "/w:1"),
    (IMAGE_REFERENCE, "w:1 "),
    (IMAGE_REFERENCE, "a" * 513),
    (DIGEST, "md5:x"),
    (DIGEST, "sha256:" + "AB" * 32),
    (RESOURCE_VERSION, "²"),
    (RESOURCE_VERSION, "١٢"),
    (RESOURCE_VERSION, "-1"),
    (RESOURCE_VERSION, "1" * 19),
    (RESOURCE_KIND, "Tenant"),
    (AUDIT_RESOURCE_ID, "acme q1"),
    (AUDIT_RESOURCE_ID, "a" * 257),
]


# Ids by position: some values come from the id generators, and every pytest-xdist
# worker must collect the same test names.
@pytest.mark.parametrize(
    ("syntax", "value"), ACCEPTED, ids=[f"accepted-{n}" for n in range(len(ACCEPTED))]
)
def test_values_in_use_are_accepted(syntax: Syntax, value: str) -> None:
    assert syntax.accepts(value)


@pytest.mark.parametrize(("syntax", "value"), REFUSED, ids=[repr(v) for _, v in REFUSED])
def test_values_outside_the_syntax_are_refused(syntax: Syntax, value: str) -> None:
    assert not syntax.accepts(value)
    violations = Violations()
    assert violations.syntax("f", value, syntax) is False
    with pytest.raises(InvalidArgument) as caught:
        violations.raise_if_any()
    assert [v.field for v in caught.value.violations] == ["f"]
    assert caught.value.violations[0].description == f"must be {syntax.rule}"


def test_synced_job_ids_and_object_ids_are_one_syntax() -> None:
    for value in [v for s, v in ACCEPTED + REFUSED if s is OBJECT_ID]:
        assert bool(JOB_ID.fullmatch(value)) == OBJECT_ID.accepts(value), value


@pytest.mark.parametrize(
    "char",
    [
        "\x00",
        "\x01",
        "\x1b",
        "\r",
        "\n",
        "\t",
        "\x7f",
        "\x85",
        "\x9f",
        "\u061c",
        "\u200b",
        "\u200c",
        "\u200d",
        "\u200e",
        "\u200f",
        "\u2028",
        "\u2029",
        "\u202a",
        "\u202e",
        "\u2060",
        "\u2066",
        "\u2069",
        "\ufeff",
    ],
)
def test_free_text_refuses_control_bidi_and_zero_width_characters(char: str) -> None:
    problem = text_problem(f"ok{char}ok")
    assert problem is not None
    assert f"U+{ord(char):04X} at position 2" in problem


def test_multi_line_text_takes_newline_and_tab_only() -> None:
    assert text_problem("line one\n\tline two", multiline=True) is None
    assert text_problem("line one\r\nline two", multiline=True) is not None
    assert text_problem("a\x00", multiline=True) is not None


@pytest.mark.parametrize(
    "value",
    ["maintenance window", "Drucke & Söhne", "印刷所", "مطبعة", "emoji ok 🖨️", ""],
)
def test_free_text_keeps_every_script_and_emoji(value: str) -> None:
    assert text_problem(value) is None


def test_text_length_is_counted_in_characters_and_reported() -> None:
    violations = Violations()
    assert violations.text("reason", "ü" * MAX_REASON, max_length=MAX_REASON)
    assert not violations.text("reason", "ü" * (MAX_REASON + 1), max_length=MAX_REASON)
    with pytest.raises(InvalidArgument) as caught:
        violations.raise_if_any()
    assert caught.value.violations[0].description == (
        f"must be at most {MAX_REASON} characters, got {MAX_REASON + 1}"
    )


def test_a_required_reason_of_blanks_is_missing() -> None:
    violations = Violations()
    violations.reason("reason", "   ")
    violations.reason("note", "", required=False)
    with pytest.raises(InvalidArgument) as caught:
        violations.raise_if_any()
    assert [v.field for v in caught.value.violations] == ["reason"]


@pytest.mark.parametrize(
    ("value", "number"),
    [("0", 0), ("12", 12), ("007", 7), ("9" * 18, int("9" * 18))],
)
def test_ascii_digits_read_numbers(value: str, number: int) -> None:
    assert ascii_digits(value) == number


@pytest.mark.parametrize(
    "value",
    [
        "",
        "²",
        "١٢",
        "\uff11\uff12",
        "1 ",
        " 1",
        "+1",
        "-1",
        "1_000",
        "0x1",
        "1.0",
        "9" * 19,
        "1\x00",
    ],
)
def test_ascii_digits_refuse_everything_else(value: str) -> None:
    assert ascii_digits(value) is None


@pytest.mark.parametrize(("value", "number"), [("0.5", 0.5), (".25", 0.25), ("1", 1.0)])
def test_ascii_decimals_read_numbers(value: str, number: float) -> None:
    assert ascii_decimal(value) == number


@pytest.mark.parametrize(
    "value",
    [
        "",
        ".",
        "1e-1",
        " 0.5",
        "0.5 ",
        "nan",
        "inf",
        "\u0660.\u0665",
        "0,5",
        "-0.5",
        "1.",
        "0.5\x00",
    ],
)
def test_ascii_decimals_refuse_everything_else(value: str) -> None:
    assert ascii_decimal(value) is None


def test_resource_versions_and_whole_numbers_name_the_value() -> None:
    violations = Violations()
    assert violations.resource_version("expected_resource_version", "") is None
    assert violations.resource_version("expected_resource_version", "42") == 42
    assert violations.resource_version("expected_resource_version", "²") is None
    assert violations.whole_number("grace", "١٢", 1, 100, "must be 1 to 100") is None
    assert violations.whole_number("grace", "101", 1, 100, "must be 1 to 100") is None
    assert violations.whole_number("grace", "12", 1, 100, "must be 1 to 100") == 12
    with pytest.raises(InvalidArgument) as caught:
        violations.raise_if_any()
    assert [(v.field, v.description) for v in caught.value.violations] == [
        (
            "expected_resource_version",
            f"must be {RESOURCE_VERSION.rule}, got '²'",
        ),
        ("grace", "must be 1 to 100, got '١٢'"),
        ("grace", "must be 1 to 100, got '101'"),
    ]


def test_a_huge_repeated_field_costs_one_violation() -> None:
    violations = Violations()
    assert violations.at_most("phases", [1] * 70_000, 32) is False
    assert violations.at_most("states", [1] * 32, 32) is True
    with pytest.raises(InvalidArgument) as caught:
        violations.raise_if_any()
    assert [(v.field, v.description) for v in caught.value.violations] == [
        ("phases", "at most 32 values, got 70000")
    ]


def test_a_huge_label_map_costs_one_violation() -> None:
    violations = Violations()
    violations.labels("labels", {f"k{i}\x00": "v\x00" for i in range(1000)})
    with pytest.raises(InvalidArgument) as caught:
        violations.raise_if_any()
    assert [(v.field, v.description) for v in caught.value.violations] == [
        ("labels", f"at most {MAX_LABELS} labels, got 1000")
    ]


def test_label_keys_and_values_are_checked_by_path() -> None:
    violations = Violations()
    violations.labels("labels", {"tier": "go\u200bld", "ti\x1ber": "gold", "ok": "fine"})
    with pytest.raises(InvalidArgument) as caught:
        violations.raise_if_any()
    assert sorted(v.field for v in caught.value.violations) == [
        "labels['ti\\x1ber']",
        "labels['tier']",
    ]


def test_selectors_are_printable_ascii_and_bounded() -> None:
    violations = Violations()
    assert violations.label_selector("s", "tier=gold,!spot,gpu")
    assert not violations.label_selector("s", "tier=go\x00ld")
    assert not violations.label_selector("s", "tier=gold\u202e")
    assert not violations.label_selector("s", "a" * 4097)
    with pytest.raises(InvalidArgument) as caught:
        violations.raise_if_any()
    assert len(caught.value.violations) == 3


def test_shown_values_are_escaped_and_cut() -> None:
    assert shown("a\x00") == "'a\\x00'"
    assert shown("\u202e") == "'\\u202e'"
    long = shown("x" * 1_000_000)
    assert len(long) < 100
    assert long.endswith("(1000000 characters)")
    assert map_key_path("labels", "x" * 1000).startswith("labels['xxx")
    assert len(map_key_path("labels", "x" * 1000)) < 100
