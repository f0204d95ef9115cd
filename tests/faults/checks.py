"""The end-of-scenario checks: every mail an article exactly once (with its body), every mail where the
mailbox's post-import action puts it, every reply accepted by the SMTP server and "sent", and every
mailbox connected."""
from __future__ import annotations

from tests.faults.harness import Outcome
from tests.faults.installation import Installation
from tests.faults.mails import Mail, folder_ids
from tests.faults.observe import Observer
from tests.faults.world import World


def check_articles(out: Outcome, observer: Observer, account_id: int, mails: list[Mail], *,
                   bodies: bool = True) -> None:
    """Each mail exactly one incoming article of the mailbox; with `bodies`, its body extracted and its own."""
    counts = observer.incoming_by_message_id([account_id])
    expected = {mail.message_id for mail in mails}
    out.mails += len(mails)
    for mail in mails:
        n = counts.get((account_id, mail.message_id), 0)
        if n == 0:
            out.lost.append(mail.message_id)
        elif n > 1:
            out.duplicated.append(mail.message_id)
    strangers = [mid for (acc, mid) in counts if acc == account_id and mid not in expected]
    if strangers:
        out.notes.append(f"{len(strangers)} articles of mailbox {account_id} carry Message-IDs no mail had: "
                         f"{strangers[:3]}")
        out.duplicated.extend(strangers)
    if bodies:
        texts = observer.bodies(account_id)
        damaged = [mail.message_id for mail in mails
                   if mail.message_id in texts and mail.body_marker not in texts[mail.message_id]]
        if damaged:
            out.lost.extend(f"{mid} (its body)" for mid in damaged)


def check_placement(out: Outcome, world: World, address: str, mails: list[Mail], action: str,
                    target: str = "") -> None:
    """move: every mail in `target` exactly once and none left in INBOX; delete: none left in INBOX."""
    left = folder_ids(world.dovecot, address, "INBOX")
    expected = {mail.message_id for mail in mails}
    out.misplaced.extend(f"{mid} still in INBOX" for mid in left if mid in expected)
    if action == "move":
        moved = folder_ids(world.dovecot, address, target)
        for mail in mails:
            n = moved.count(mail.message_id)
            if n == 0 and mail.message_id not in left:
                out.misplaced.append(f"{mail.message_id} in neither INBOX nor {target}")
            elif n > 1:
                out.misplaced.append(f"{mail.message_id} {n} times in {target}")


def check_replies(out: Outcome, world: World, observer: Observer, reply_ids: list[str],
                  explain: dict[str, str] | None = None) -> None:
    """Every queued reply "sent" and accepted by the SMTP server at least once; each one accepted twice is
    recorded with the reason `explain` gives for it (or "unexplained")."""
    states = observer.outbox()
    submitted = world.submitted()
    out.replies += len(reply_ids)
    for mid in reply_ids:
        if submitted.get(mid, 0) == 0:
            out.replies_lost.append(f"{mid} never reached the SMTP server (state {states.get(mid)})")
        elif states.get(mid) != "sent":
            out.replies_lost.append(f"{mid} reached the SMTP server but is {states.get(mid)!r}, not sent")
        if submitted.get(mid, 0) > 1:
            out.replies_twice[mid] = (explain or {}).get(mid) or \
                f"unexplained: accepted {submitted[mid]} times with no fault between the submissions"
            row = observer.outbox_row(mid)
            out.notes.append(f"{mid} accepted at {[round(t, 1) for t, m in world.submissions if m == mid]}; its outbox "
                             f"row: {row}")


def check_connected(out: Outcome, installation: Installation) -> None:
    for account in installation.accounts():
        if account["status"] != "connected":
            out.stuck.append(f"{account['address']} is {account['status']}: {account.get('last_error')}")
