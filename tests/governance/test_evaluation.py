"""Policy planning, fallback cycles and command keys: pure functions, no I/O."""

from __future__ import annotations

from ppos.controlplane.core.validation import REQUEST_ID
from ppos.controlplane.noderegistry.v1 import node_registry_service_pb2 as nr_pb
from ppos.controlplane.services.governance.outbox.commands import idempotency_key
from ppos.controlplane.services.governance.policy.evaluation import (
    Context,
    JobView,
    PolicyView,
    plan,
)
from ppos.controlplane.services.governance.resources.routing import find_cycle
from ppos.preflight.v1 import gateway_service_pb2 as gw_pb

DIGEST = "sha256:" + "cd" * 32


def job(**changes: object) -> JobView:
    values: dict[str, object] = {
        "region": "eu-west-1",
        "job_id": "job_1779116602472_1d246",
        "revision": 3,
        "tenant_id": "acme",
        "queue_id": "main",
        "node_id": "node_a",
        "container_image": "registry.example/worker:7.4.1",
        "governance_state": "FAILED_RUNTIME_ENVIRONMENT",
        "payload_sha256": bytes(range(32)),
        "sync_sequence": 41,
        "record_time_epoch": 1_790_000_000.0,
    }
    values.update(changes)
    return JobView(**values)  # type: ignore[arg-type]


def policy(
    *actions: dict[str, object], state: str = "FAILED_RUNTIME_ENVIRONMENT", **kw: int
) -> PolicyView:
    return PolicyView(
        policy_id="env-recovery",
        generation=2,
        tenant_scope="",
        trigger_state=state,
        actions=[dict(a) for a in actions],
        enabled=True,
        node_failure_threshold=kw.get("threshold", 0),
        node_failure_window_seconds=kw.get("window", 0),
    )


REIMAGE = {"kind": "REIMAGE_NODE", "parameters": {}}
RETRY = {"kind": "RETRY_JOB", "parameters": {}}
KNOWN_NODE = Context(node_known=True, node_container=("registry.example/worker:7.4.2", DIGEST))


def test_runtime_failure_reimages_the_node_and_retries_elsewhere() -> None:
    result = plan(job(), policy(REIMAGE, RETRY), KNOWN_NODE, "dec_1")
    assert [s.kind for s in result.steps] == ["REIMAGE_NODE", "RETRY_JOB"]
    reimage, retry = (s.command for s in result.steps)
    assert reimage is not None
    assert retry is not None
    assert reimage.target == "noderegistry"
    assert reimage.method.endswith(".NodeRegistryService/ReimageNode")
    assert isinstance(reimage.request, nr_pb.ReimageNodeRequest)
    assert reimage.request.node_id == "node_a"
    assert reimage.request.target.digest == DIGEST
    assert reimage.request.idempotency_key == reimage.idempotency_key
    assert retry.target == "gateway:eu-west-1"
    assert isinstance(retry.request, gw_pb.RetryJobRequest)
    assert retry.request.failed_revision == 3
    assert retry.request.avoid_node_id == "node_a"
    assert retry.request.header.decision_id == "dec_1"
    assert retry.request.header.idempotency_key == retry.idempotency_key
    assert result.node_action == "REIMAGE"
    rationale = result.rationale(job(), policy(REIMAGE, RETRY))
    assert "job_1779116602472_1d246 revision 3" in rationale
    assert bytes(range(32)).hex()[:16] in rationale
    # Keys depend on the job, revision, policy and action only: the same decision
    # taken again (a replay) yields the same keys, which receivers deduplicate.
    again = plan(job(), policy(REIMAGE, RETRY), KNOWN_NODE, "dec_other")
    assert [s.command.idempotency_key for s in again.steps if s.command] == [
        reimage.idempotency_key,
        retry.idempotency_key,
    ]
    assert plan(job(revision=4), policy(RETRY), KNOWN_NODE, "d").steps[
        0
    ].command.idempotency_key != (  # type: ignore[union-attr]
        retry.idempotency_key
    )


def test_a_node_failing_again_and_again_is_cordoned_instead() -> None:
    repeated = Context(
        node_failures=3, node_known=True, node_container=("registry.example/w:1", DIGEST)
    )
    result = plan(job(), policy(REIMAGE, RETRY, threshold=3, window=600), repeated, "dec_2")
    assert [s.kind for s in result.steps] == ["CORDON_NODE", "RETRY_JOB"]
    assert result.node_action == "CORDON"
    assert "cordoned instead of re-imaged" in " ".join(result.notes)
    below = Context(node_failures=2, node_known=True, node_container=("w:1", DIGEST))
    assert plan(job(), policy(REIMAGE, threshold=3, window=600), below, "d").node_action == (
        "REIMAGE"
    )
    # Already cordoned in the window: not again, but the job is still retried.
    cordoned = Context(node_failures=5, node_cordoned_by="dec_0", node_known=True)
    result = plan(job(), policy(REIMAGE, RETRY, threshold=3, window=600), cordoned, "dec_3")
    assert [s.kind for s in result.steps] == ["RETRY_JOB"]
    assert "already cordoned by decision dec_0" in " ".join(result.notes)


def test_unknown_nodes_and_missing_versions_are_noted_not_guessed() -> None:
    unknown = plan(job(), policy(REIMAGE, RETRY), Context(node_known=False), "d")
    assert [s.kind for s in unknown.steps] == ["RETRY_JOB"]
    assert "unknown to the node registry" in unknown.notes[0]
    no_version = plan(
        job(), policy(REIMAGE), Context(node_known=True, node_container=("w", "")), "d"
    )
    assert no_version.steps == []
    assert "no pinned version" in no_version.notes[0]
    pinned = {"kind": "REIMAGE_NODE", "parameters": {"image": "w:9", "digest": DIGEST}}
    chosen = plan(job(), policy(pinned), Context(node_known=True), "d").steps[0].command
    assert chosen is not None
    assert chosen.request.target.image == "w:9"  # type: ignore[attr-defined]
    nodeless = plan(job(node_id=""), policy(REIMAGE, RETRY), Context(), "d")
    assert [s.kind for s in nodeless.steps] == ["RETRY_JOB"]


def test_findings_are_routed_and_degraded_queues_lowered() -> None:
    review = {"kind": "ROUTE_TO_REVIEW", "parameters": {"partner_id": "review-hub"}}
    findings = job(governance_state="COMPLETED_WITH_FINDINGS", node_id="")
    result = plan(findings, policy(review, state="COMPLETED_WITH_FINDINGS"), Context(), "d")
    [step] = result.steps
    assert step.command is not None
    assert isinstance(step.command.request, gw_pb.RouteJobToReviewRequest)
    assert step.command.request.partner_id == "review-hub"
    lower = {
        "kind": "LOWER_QUEUE_CAPACITY",
        "parameters": {"capacity_factor": "0.5", "min_capacity": "3"},
    }
    degraded = job(governance_state="DEGRADED")
    result = plan(degraded, policy(lower, state="DEGRADED"), Context(queue=(10, "ACTIVE")), "d")
    assert [(s.kind, s.new_capacity, s.command) for s in result.steps] == [
        ("LOWER_QUEUE_CAPACITY", 5, None)
    ]
    at_floor = plan(degraded, policy(lower, state="DEGRADED"), Context(queue=(3, "ACTIVE")), "d")
    assert at_floor.steps == []
    ungoverned = plan(degraded, policy(lower, state="DEGRADED"), Context(queue=None), "d")
    assert "not governed here" in ungoverned.notes[0]
    remainder = {"kind": "REQUEST_REMAINDER", "parameters": {}}
    [step] = plan(
        job(governance_state="PARTIAL"), policy(remainder, state="PARTIAL"), Context(), "d"
    ).steps
    assert step.command is not None
    assert step.command.method.endswith("/RequestRemainder")


def test_fallback_cycles() -> None:
    assert find_cycle([("a", "b"), ("b", "c")]) is None
    assert find_cycle([("a", "b"), ("b", "c"), ("c", "a")]) == ["a", "b", "c", "a"]
    assert find_cycle([("x", "y"), ("b", "c"), ("c", "b")]) == ["b", "c", "b"]
    assert find_cycle([]) is None


def test_idempotency_keys_are_valid_request_ids_whatever_the_parts() -> None:
    short = idempotency_key("dec", "eu-west-1", "job_1", 3, "p", "retry_job")
    assert short == "dec:eu-west-1:job_1:3:p:retry_job"
    long = idempotency_key("dec", "eu-west-1", "j" * 200, 3, "p", "retry_job")
    odd = idempotency_key("dec", "eu west/1", "job 1", 3, "p", "x")
    for key in (short, long, odd):
        assert REQUEST_ID.fullmatch(key), key
    assert long.startswith("sha256:")
    assert long != idempotency_key("dec", "eu-west-1", "j" * 200, 4, "p", "retry_job")
