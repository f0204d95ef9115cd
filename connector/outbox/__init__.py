"""The durable outbox: queue (queue.py) -> send (sender.py), with fenced leases (lease.py) and recovery
after a crash (recovery.py). A failed send is retried with backoff and never lost; permanent failures are
explained and the agent can retry them."""
from .queue import backoff, open_outgoing_ticket, queue_reply, reply_quote, retry
from .sender import MAX_TRANSIENT_ATTEMPTS, Sender

__all__ = ["MAX_TRANSIENT_ATTEMPTS", "Sender", "backoff", "open_outgoing_ticket", "queue_reply", "reply_quote",
           "retry"]
