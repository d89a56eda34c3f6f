"""The public key set, served to anyone (like /.well-known/jwks.json)."""
