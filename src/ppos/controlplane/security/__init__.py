"""Edge authentication, PREFLIGHT_JWT minting and verification, signing keys."""
