"""`pposctl`, the operator command line."""
