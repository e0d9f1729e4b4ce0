"""Test-side helpers: the message ledger and worker processes. Nothing outside tests imports these."""
