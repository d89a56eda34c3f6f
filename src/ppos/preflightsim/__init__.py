"""A simulator of someone else's systems: a regional preflight registry and gateway.

It is a test double, shipped for the demo, the tests and the benchmarks. It is
not part of the control plane: the control plane never imports it and never
reads its files; it only calls it over the external contract
(`ppos.preflight.v1`) with a PREFLIGHT_JWT, like it would call the real thing.
"""
