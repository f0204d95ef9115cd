"""Shared helpers for the test suite: TLS material, free ports, waiting."""
