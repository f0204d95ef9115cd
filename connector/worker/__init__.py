"""The worker (loop.py) and its collaborators: the workers table (registry.py), leases and the sharing out of
mailboxes (leases.py), the held mailboxes and their sync threads (running.py), one mailbox's unit of work
(mailbox.py), the watcher of idle connections (watch.py), side loops (periodic.py), failure backoff (failures.py), the one-shot modes (oneshot.py)."""
from .failures import backoff_seconds
from .loop import Worker

__all__ = ["Worker", "backoff_seconds"]
