"""Tables of the node registry."""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, CheckConstraint, Index, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ppos.controlplane.storage.base import Base, UTCDateTime


class NodeRow(Base):
    __tablename__ = "nodes"

    node_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    region: Mapped[str] = mapped_column(String(64), nullable=False)
    cluster: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    hostname: Mapped[str] = mapped_column(String(256), nullable=False, default="")
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    capacity_slots: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    slots_in_use: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    schedulable: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    unschedulable_reason: Mapped[str] = mapped_column(String(1024), nullable=False, default="")
    drain_deadline: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    readiness: Mapped[str] = mapped_column(String(16), nullable=False)
    readiness_reason: Mapped[str] = mapped_column(String(256), nullable=False, default="")
    last_transition_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    last_heartbeat_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    container_image: Mapped[str] = mapped_column(String(512), nullable=False, default="")
    container_digest: Mapped[str] = mapped_column(String(80), nullable=False, default="")
    registered: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    credential_generation: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    resource_version: Mapped[int] = mapped_column(BigInteger, nullable=False, default=1)
    generation: Mapped[int] = mapped_column(BigInteger, nullable=False, default=1)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)

    __table_args__ = (
        CheckConstraint("capacity_slots >= 0", name="capacity_not_negative"),
        Index("ix_nodes_region_readiness", "region", "readiness"),
        Index("ix_nodes_readiness_heartbeat", "readiness", "last_heartbeat_at"),
        Index("ix_nodes_container_image", "container_image"),
    )


class EnrollmentRow(Base):
    __tablename__ = "node_enrollments"

    enrollment_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # SHA-256 (hex) of the one-time token; the token itself is never stored.
    token_sha256: Mapped[str] = mapped_column(String(64), nullable=False, unique=True)
    request_id: Mapped[str | None] = mapped_column(String(128), nullable=True, unique=True)
    region: Mapped[str] = mapped_column(String(64), nullable=False)
    cluster: Mapped[str] = mapped_column(String(64), nullable=False, default="")
    labels: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    created_by: Mapped[str] = mapped_column(String(256), nullable=False)
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    expires_at: Mapped[dt.datetime] = mapped_column(UTCDateTime, nullable=False)
    redeemed_at: Mapped[dt.datetime | None] = mapped_column(UTCDateTime, nullable=True)
    node_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
