"""Shared building blocks of the control plane: errors, logging, validation, ids."""
