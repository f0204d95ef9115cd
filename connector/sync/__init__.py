"""Reading mail, in four steps, each in a module named for it:

1. fetch: the transport (transport/, over mail/imap.py) lists what is new since the cursor and fetches
   raw mail in batches; a fetching thread (sync/fetcher.py) keeps the next batch coming;
2. parse: parse_pool.py parses whole mails in worker processes under a time budget (mail/parse.py, with
   the fast path of mail/fastpath.py); in a backlog of `DEFER_BODIES_FROM` mails or more, the mails past
   its memory allowance (import_pass.parse_whole) are parsed for their headers only;
3. ingest: ingest.py turns the batch into articles on tickets; sync/import_pass.py commits it with the
   new high-water mark, fenced by the mailbox's lease (sync/fence.py), then runs the post-import action
   (sync/post_import.py); a mail that keeps failing is quarantined (sync/quarantine.py);
4. extract: extract.py fills in bodies and attachments of mails imported from their headers.

Crash safety comes from that order: the articles of a batch and the new `last_uid` are committed in one
transaction, the post-import action (mark read, move, delete) runs only after that commit, and
Message-ID dedup makes any re-fetch harmless. `AccountSync` (sync/account.py) keeps one mailbox's
connection across passes; the worker (worker/) decides when a pass runs.
"""
from .account import AccountSync
from .errors import LeaseLost, PassResult, SyncError
from .import_pass import DEFER_BODIES_FROM

__all__ = ["AccountSync", "DEFER_BODIES_FROM", "LeaseLost", "PassResult", "SyncError"]
