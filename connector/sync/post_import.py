"""The account's post-import action (keep, mark read, move, delete), for mails whose import is committed.

It runs only after the commit of their batch, in the thread that owns the connection during the pass
(sync/fetcher.py). A crash (or a lost connection, or a failed move) between the commit and the action
leaves the mail in the folder, imported: for the actions that take mail out of the folder (move,
delete), `accounts.post_import_done_uid` says up to which UID the action is known to have run, and the
next pass runs it for what is still in the folder between that and `last_uid` before it reads new mail
(`catch_up`). Only mails imported while the action was set are touched: a mailbox switched from "keep"
to "delete" does not delete what was imported before. "Mark read" is not caught up: a person may have
marked a mail unread again on purpose. A failed action is logged, and retried at the next pass.
"""
from __future__ import annotations

import logging
from typing import Callable

from ..models import Account
from ..transport.base import Mailbox

log = logging.getLogger(__name__)


LEAVES_FOLDER = ("move", "delete")


def action_for(mailbox: Mailbox, account: Account) -> Callable[[list[int]], bool]:
    """The action as a callable: True when it ran (or there was nothing to do)."""
    action, folder, address = account.post_import_action, account.move_to_folder, account.address

    def run(uids: list[int]) -> bool:
        if not uids or action == "keep":
            return True
        try:
            mailbox.after_import(uids, action, folder)
        except Exception as exc:  # noqa: BLE001 - the mail is imported; the action is tried again next pass
            log.warning("%s: post-import action %s failed: %s", address, action, exc)
            return False
        return True
    return run


def catch_up(mailbox: Mailbox, account: Account) -> bool:
    """Run the action for the mails committed up to `last_uid` that are still in the (selected) folder
    past `post_import_done_uid`; move the mark. True when the mark moved (the caller commits)."""
    done, last = account.post_import_done_uid, account.last_uid
    if done == last:
        return False
    if account.post_import_action not in LEAVES_FOLDER or done is None or done > last:
        # nothing to catch up: another action, the first pass since the upgrade, or a folder re-read
        account.post_import_done_uid = last
        return True
    settle_folder = getattr(mailbox, "settle_folder", None)  # Graph: its numbers are not the server's UIDs
    if settle_folder is not None:
        if not settle_folder(account.post_import_action, account.move_to_folder):
            return False
        account.post_import_done_uid = last
        return True
    left = [uid for uid in mailbox.uids_after(done) if uid <= last]
    if left:
        log.info("%s: %s imported mail(s) still in the folder (their post-import %s did not run): running it now",
                 account.address, len(left), account.post_import_action)
        if not action_for(mailbox, account)(left):
            return False
    account.post_import_done_uid = last
    return True


class ActionProgress:
    """How far the actions queued during a pass have run, for the mark committed with each batch."""

    def __init__(self, mailbox: Mailbox, account: Account) -> None:
        self.run_action = action_for(mailbox, account)
        self.leaves_folder = account.post_import_action in LEAVES_FOLDER
        self.acted_up_to = 0
        self.failed = False

    def __call__(self, uids: list[int]) -> None:  # in the fetching thread
        if self.run_action(uids):
            self.acted_up_to = max(self.acted_up_to, max(uids, default=0))
        else:
            self.failed = True

    def mark(self, account: Account, *, finished: bool = False) -> None:
        """Move `post_import_done_uid` as far as the actions are known to have run (before a commit)."""
        last = account.last_uid
        if not self.leaves_folder:
            account.post_import_done_uid = last
        elif not self.failed:
            reached = last if finished else min(self.acted_up_to, last)
            account.post_import_done_uid = max(account.post_import_done_uid or 0, reached)
