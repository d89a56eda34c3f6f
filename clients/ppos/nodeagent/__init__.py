"""`ppos-node-agent`: the reference client of a worker node.

A node agent redeems a one-time enrollment token for its node credential
(EnrollNode), registers its region, image and digest (RegisterNode),
heartbeats with its readiness at the interval the control plane asks for,
runs the re-image commands it is handed (simulated work: acknowledged, then
SUCCEEDED with the new container version or FAILED with a message), renews
its credential before it expires, and rides out a control-plane restart
(backoff, then the same node carries on: nothing is registered twice).

Built only on the client library (`ppos.controlplane.client`) and the
generated contracts. `--count N` runs N agents in one process for demos and
benchmarks.
"""

from ppos.nodeagent.agent import AgentOptions, NodeAgent
from ppos.nodeagent.identity import Identity, IdentityStore

__all__ = ["AgentOptions", "Identity", "IdentityStore", "NodeAgent"]
