"""Microsoft Graph v1.0 as a mail transport: read (delta + MIME), act after import, send, watch.

- `GraphMailbox` (mailbox.py): one mailbox, `/me` or a shared `/users/{address}`, over `GraphHttp`
  (http.py: token, the 4-request gate per mailbox, retries, throttling as errors).
- `GraphError` (errors.py): every failure as a sentence for people plus flags for the caller.
- Change notifications: `SubscriptionManager` (subscriptions.py) keeps one subscription per mailbox
  alive; notify_store.py is the database side the web hooks (web/graph_hooks.py) write to.
"""
from .delta import DeltaMessage, DeltaPage
from .errors import GraphError
from .http import TokenSource
from .mailbox import FolderInfo, GraphMailbox

__all__ = ["DeltaMessage", "DeltaPage", "FolderInfo", "GraphError", "GraphMailbox", "TokenSource"]
