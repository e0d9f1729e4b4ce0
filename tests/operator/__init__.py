"""Tests of the operator (package ``warren_operator`` in ``operator/``)."""
