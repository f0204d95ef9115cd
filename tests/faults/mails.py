"""Mail for the campaign: seeded, each with its own Message-ID and a body that says which one it is, some
with attachments (so a big import writes real pack files and body extraction has work to do); put into
Dovecot in bulk (files in the Maildir, as a migration would leave them) or one by one over LMTP.
"""
from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime
from datetime import datetime, timezone

from tests.servers.dovecot import DovecotServer

WORDS = ("invoice order delivery printer password account refund shipment update question contract "
         "meeting schedule access license renewal backup server outage network report").split()


@dataclass(frozen=True)
class Mail:
    message_id: str
    body_marker: str  # a line the extracted body must contain
    raw: bytes


def make_mails(rng: random.Random, tag: str, count: int, *, to: str, attachment_share: float = 0.2,
               start: int = 0) -> list[Mail]:
    """`count` mails to `to`; about `attachment_share` of them carry a 20-120 KB attachment."""
    mails = []
    for i in range(start, start + count):
        marker = f"Fault campaign mail {tag}-{i}"
        msg = EmailMessage()
        msg["From"] = f"Customer {i} <customer{i % 97}@example.net>"
        msg["To"] = to
        msg["Subject"] = f"{rng.choice(WORDS).title()} {rng.choice(WORDS)} ({tag} {i})"
        msg["Date"] = format_datetime(datetime.now(timezone.utc))
        msg["Message-ID"] = f"<{tag}.{i}@campaign.example.net>"
        paragraphs = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 40)))
                      for _ in range(rng.randint(1, 12))]
        msg.set_content(marker + "\n\n" + "\n\n".join(paragraphs) + "\n")
        if rng.random() < attachment_share:
            size = rng.randint(20_000, 120_000)
            msg.add_attachment(rng.randbytes(size), maintype="application", subtype="octet-stream",
                               filename=f"report-{i}.bin")
        mails.append(Mail(msg["Message-ID"], marker, msg.as_bytes()))
    return mails


def put_in_maildir(dovecot: DovecotServer, address: str, mails: list[Mail]) -> None:
    """Files in the INBOX's Maildir `new/`, owned as Dovecot's mail processes expect: thousands in a second,
    where LMTP takes a few milliseconds a mail. Dovecot gives them UIDs at the next look."""
    top = dovecot.mail_root / address.lower()
    root = top / "Maildir"
    owner = dovecot._identity()[:2] if os.geteuid() == 0 else None  # as root, Dovecot's mail user owns the mail
    for path in (top, root, root / "cur", root / "new", root / "tmp"):
        if not path.exists():
            path.mkdir(parents=True, exist_ok=True)
            if owner:
                os.chown(path, *owner)
    host = os.uname().nodename
    stamp = int(time.time())
    for n, mail in enumerate(mails):
        name = f"{stamp}.M{n}R{random.getrandbits(32):08x}P{os.getpid()}.{host}"
        tmp = root / "tmp" / name
        tmp.write_bytes(mail.raw)
        if owner:
            os.chown(tmp, *owner)
        os.rename(tmp, root / "new" / name)


def deliver(dovecot: DovecotServer, address: str, mail: Mail) -> None:
    """One mail over LMTP, as an MTA delivers new mail (IDLE announces it)."""
    dovecot.deliver(address, mail.raw, mail_from="customer@example.net")


def folder_ids(dovecot: DovecotServer, address: str, folder: str = "INBOX") -> list[str]:
    """Message-IDs in a folder now (a missing folder holds none)."""
    if folder != "INBOX" and folder not in dovecot.folders(address):
        return []
    return [m["message_id"] for m in dovecot.messages(address, folder)]


def folder_count(dovecot: DovecotServer, address: str, folder: str = "INBOX") -> int:
    return dovecot.status(address, folder)["messages"]
