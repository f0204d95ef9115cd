"""The account's post-import action (keep, mark read, move, delete), for mails whose import is committed.

It runs only after the commit of their batch, in the thread that owns the connection during the pass
(sync/fetcher.py): a crash between the commit and the action leaves the mail in place, imported, and the
next pass finds it known (Message-ID dedup) without touching it again. A failed action is logged; the
mail is imported either way.
"""
from __future__ import annotations

import logging
from typing import Callable

from ..models import Account
from ..transport.base import Mailbox

log = logging.getLogger(__name__)


def action_for(mailbox: Mailbox, account: Account) -> Callable[[list[int]], None]:
    action, folder, address = account.post_import_action, account.move_to_folder, account.address

    def run(uids: list[int]) -> None:
        if not uids or action == "keep":
            return
        try:
            mailbox.after_import(uids, action, folder)
        except Exception as exc:  # noqa: BLE001 - the mail is imported; the action is retried by the user
            log.warning("%s: post-import action %s failed: %s", address, action, exc)
    return run
