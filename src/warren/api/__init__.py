"""The HTTP API role."""
