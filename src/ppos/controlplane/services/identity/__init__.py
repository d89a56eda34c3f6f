"""Who the edge takes the caller to be, from the credential alone."""
