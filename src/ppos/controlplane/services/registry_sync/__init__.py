"""Registry sync: pulls job telemetry from regional preflight registries."""
