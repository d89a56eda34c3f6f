"""Hand-framed WatchNodes bytes against the protobuf runtime; label selectors in
Python and in SQL (both backends) agree."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from ppos.controlplane.core.selectors import SelectorError, parse_selector
from ppos.controlplane.noderegistry.v1 import node_pb2
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as pb
from ppos.controlplane.services.node_registry import watch_encoding
from ppos.controlplane.services.node_registry.models import NodeRow
from ppos.controlplane.storage.labels import selector_clause


def test_field_numbers_match_the_contract() -> None:
    response = pb.WatchNodesResponse.DESCRIPTOR.fields_by_name
    event = pb.WatchEvent.DESCRIPTOR.fields_by_name
    assert response["events"].number == 1
    assert (event["type"].number, event["resource_version"].number, event["node"].number) == (
        1,
        2,
        3,
    )


@pytest.mark.parametrize("value", [0, 1, 127, 128, 300, 16383, 16384, 2**35, 2**63 - 1])
def test_varint_matches_protobuf(value: int) -> None:
    expected = pb.WatchEvent(resource_version=value).SerializeToString()
    assert (b"\x10" + watch_encoding.varint(value) if value else b"") == expected


def test_framed_events_parse_as_the_messages_they_stand_for() -> None:
    node = node_pb2.Node(
        node_id="node_x",
        spec=node_pb2.NodeSpec(region="eu-west-1", capacity_slots=4),
        status=node_pb2.NodeStatus(readiness=node_pb2.READINESS_READY, slots_in_use=2),
    )
    node_bytes = node.SerializeToString()
    message = (
        watch_encoding.framed_event(watch_encoding.SNAPSHOT, 7, node_bytes)
        + watch_encoding.framed_event(watch_encoding.SNAPSHOT_END, 7)
        + watch_encoding.framed_event(watch_encoding.MODIFIED, 2**40, node_bytes)
        + watch_encoding.framed_event(watch_encoding.BOOKMARK, 2**40)
        + watch_encoding.framed_event(watch_encoding.RESYNC_REQUIRED, 0)
    )
    expected = pb.WatchNodesResponse(
        events=[
            pb.WatchEvent(type=pb.WATCH_EVENT_TYPE_SNAPSHOT, resource_version=7, node=node),
            pb.WatchEvent(type=pb.WATCH_EVENT_TYPE_SNAPSHOT_END, resource_version=7),
            pb.WatchEvent(type=pb.WATCH_EVENT_TYPE_MODIFIED, resource_version=2**40, node=node),
            pb.WatchEvent(type=pb.WATCH_EVENT_TYPE_BOOKMARK, resource_version=2**40),
            pb.WatchEvent(type=pb.WATCH_EVENT_TYPE_RESYNC_REQUIRED),
        ]
    )
    assert message == expected.SerializeToString()
    assert pb.WatchNodesResponse.FromString(message) == expected
    with pytest.raises(ValueError):
        watch_encoding.varint(-1)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a,,b", "requirement 2 is empty"),
        ("tier in (a,b)", "set-based selectors"),
        ("bad key=x", "key name"),
        ("k=bad value", "value must be"),
        ("k=v=w", "value must be"),
        ("-k=v", "key name"),
        ("example.com/=v", "key name"),
        ("UPPER.example.com/k=v", "key prefix"),
        (",".join(f"k{i}" for i in range(33)), "at most 32"),
    ],
)
def test_malformed_selectors_say_what_is_wrong(text: str, problem: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_selector(text)
    assert problem in str(caught.value)


LABELS = [
    {"gpu": "true", "tier": "core", "example.com/zone": "a"},
    {"gpu": "false", "tier": "edge"},
    {"tier": "edge"},
    {},
    {"gpu": "", "tier": "core"},
]
SELECTORS = [
    "",
    "gpu=true",
    "gpu==true",
    "gpu!=true",
    "gpu",
    "!gpu",
    "tier=edge,gpu!=false",
    "example.com/zone=a",
    "gpu=",
    "!tier",
    " tier = core , gpu ",
]


def test_selectors_match_the_same_nodes_in_python_and_in_sql(database_url: str) -> None:
    import datetime as dt

    now = dt.datetime.now(dt.UTC)
    engine = create_engine(database_url)
    try:
        with Session(engine) as session, session.begin():
            for index, labels in enumerate(LABELS):
                session.add(
                    NodeRow(
                        node_id=f"node_{index}",
                        region="eu-west-1",
                        labels=labels,
                        readiness="READY",
                        last_transition_at=now,
                        created_at=now,
                        updated_at=now,
                    )
                )
        with Session(engine) as session:
            for text in SELECTORS:
                selector = parse_selector(text)
                in_python = {
                    f"node_{i}" for i, labels in enumerate(LABELS) if selector.matches(labels)
                }
                clause = selector_clause(selector, NodeRow.labels)
                query = select(NodeRow.node_id)
                if clause is not None:
                    query = query.where(clause)
                in_sql = set(session.scalars(query))
                assert in_sql == in_python, text
    finally:
        engine.dispose()
