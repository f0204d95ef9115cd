"""Benchmarks: `python -m bench [--only import|latency|mailboxes|pages] [--size tiny|full]` (see BENCHMARKS.md)."""
from __future__ import annotations

import importlib


class _Lazy(dict):
    """name -> module, imported on first use (a benchmark's imports stay out of the others)."""

    def __getitem__(self, name):
        return importlib.import_module(f"bench.{dict.__getitem__(self, name)}")


BENCHES = _Lazy({"import": "importing", "latency": "latency", "mailboxes": "mailboxes", "pages": "pages"})
