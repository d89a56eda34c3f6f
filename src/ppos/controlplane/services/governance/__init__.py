"""Governance: tenants, queues, partner routes, policies, admin jobs, audit."""
