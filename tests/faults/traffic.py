"""Mail coming in and replies going out while faults happen: customers write to several mailboxes over
LMTP, agents answer through the REST API. Both wait out a server that is down, as an MTA queue and an
agent would, so what was sent is known exactly."""
from __future__ import annotations

import random
import threading
import time

import requests

from tests.faults.installation import Installation
from tests.faults.mails import Mail, deliver, make_mails
from tests.faults.world import World


class Traffic(threading.Thread):
    def __init__(self, world: World, installation: Installation, rng: random.Random, tag: str,
                 mailboxes: dict[int, str], *, mail_gap: tuple[float, float] = (0.05, 0.4),
                 reply_every: int = 4) -> None:
        super().__init__(name="traffic", daemon=True)
        self.world, self.installation, self.rng, self.tag = world, installation, rng, tag
        self.mailboxes = mailboxes  # account id -> address
        self.mail_gap, self.reply_every = mail_gap, reply_every
        self.mails: dict[int, list[Mail]] = {account: [] for account in mailboxes}
        self.replies = 0
        self.running = threading.Event()  # set: traffic flows; clear: paused
        self.stopped = threading.Event()
        self.error: BaseException | None = None
        self._count = 0
        self._tickets: list[int] = []
        self._idle = threading.Event()  # set while no mail or reply is in hand
        self._idle.set()

    # -- control ---------------------------------------------------------------------------------------
    def resume(self) -> None:
        self.running.set()

    def pause(self) -> None:
        """Stop after the mail or reply in hand; returns once nothing is in flight."""
        self.running.clear()
        self._idle.wait(120)

    def stop(self) -> None:
        self.stopped.set()
        self.running.set()
        self.join(120)

    @property
    def delivered(self) -> int:
        return sum(len(m) for m in self.mails.values())

    # -- the thread --------------------------------------------------------------------------------------
    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                self._idle.set()
                self.running.wait()
                if self.stopped.is_set():
                    break
                self._idle.clear()
                self._one_mail()
                self._count += 1
                if self._count % self.reply_every == 0:
                    self._one_reply()
                self._idle.set()
                time.sleep(self.rng.uniform(*self.mail_gap))
        except BaseException as exc:  # noqa: BLE001 - reported by the scenario
            self.error = exc
        finally:
            self._idle.set()

    def _one_mail(self) -> None:
        account = self.rng.choice(sorted(self.mailboxes))
        address = self.mailboxes[account]
        mail = make_mails(self.rng, f"{self.tag}.{account}", 1, to=address, attachment_share=0.1,
                          start=len(self.mails[account]))[0]
        _patiently(lambda: deliver(self.world.dovecot, address, mail), "delivering mail")
        self.mails[account].append(mail)

    def _one_reply(self) -> None:
        if not self._tickets or self.rng.random() < 0.2:
            self._tickets = [t["id"] for address in self.mailboxes.values()
                             for t in _patiently(lambda: self.installation.tickets(address), "listing tickets")]
        if not self._tickets:
            return
        ticket = self.rng.choice(self._tickets)
        self.replies += 1
        n = self.replies
        _patiently(lambda: self.installation.reply(ticket, f"Answer {n} while servers restart.\n\nRegards"),
                   "queueing a reply")


def _patiently(action, what: str, timeout: float = 120.0):
    """Retry while a server is down (an MTA queue and an agent pressing Send again do the same)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return action()
        except (OSError, RuntimeError, requests.RequestException) as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} failed for {timeout:.0f} s: {exc!r}") from None
            time.sleep(0.2)
