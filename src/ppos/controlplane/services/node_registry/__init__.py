"""Node registry: enrollment, registration, heartbeats and node credentials."""
