"""Proto enums and the short names stored in the database (`ACTIVE`, `DEGRADED`, ...)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ppos.controlplane.governance.v1 import resources_pb2 as pb
from ppos.preflight.v1 import gateway_service_pb2 as gw_pb
from ppos.preflight.v1 import job_pb2


@dataclass(frozen=True)
class EnumNames:
    """Maps a proto enum to stored names by dropping its common prefix."""

    wrapper: Any  # the generated enum (typed by mypy-protobuf as a class of NewTypes)
    prefix: str

    def to_name(self, value: int) -> str:
        """Stored name of a known, set value; ValueError otherwise."""
        if value == 0 or value not in self.wrapper.values():
            raise ValueError(f"{value} is not a known {self.prefix.rstrip('_')} value")
        return str(self.wrapper.Name(value))[len(self.prefix) :]

    def is_known(self, value: int) -> bool:
        return value != 0 and value in self.wrapper.values()

    def to_proto(self, name: str) -> Any:
        """The enum value (typed Any: each enum is its own ValueType); '' is UNSPECIFIED."""
        return self.wrapper.Value(self.prefix + (name or "UNSPECIFIED"))

    def names(self) -> list[str]:
        names = self.wrapper.keys()
        return [str(n)[len(self.prefix) :] for n in names if n != self.unspecified]

    @property
    def unspecified(self) -> str:
        return self.prefix + "UNSPECIFIED"


TENANT_PHASE = EnumNames(pb.TenantPhase, "TENANT_PHASE_")
QUEUE_STATE = EnumNames(pb.QueueState, "QUEUE_STATE_")
GATEWAY_QUEUE_STATE = EnumNames(gw_pb.QueueState, "QUEUE_STATE_")
GOVERNANCE_STATE = EnumNames(job_pb2.GovernanceState, "GOVERNANCE_STATE_")
POLICY_ACTION = EnumNames(pb.PolicyActionKind, "POLICY_ACTION_KIND_")
COMMAND_STATE = EnumNames(pb.CommandState, "COMMAND_STATE_")
ADMIN_JOB_KIND = EnumNames(pb.AdminJobKind, "ADMIN_JOB_KIND_")
ADMIN_JOB_STATE = EnumNames(pb.AdminJobState, "ADMIN_JOB_STATE_")

# Governance states a policy may be triggered by.
TRIGGER_STATES = ("DEGRADED", "PARTIAL", "COMPLETED_WITH_FINDINGS", "FAILED_RUNTIME_ENVIRONMENT")
TERMINAL_ADMIN_JOB_STATES = frozenset({"SUCCEEDED", "FAILED", "CANCELLED"})
