"""The servers the product depends on restarted mid-run, while mail comes in and replies go out: Dovecot,
the SMTP server (once at an ordinary moment, once right after it took a reply's DATA and before its 250),
the identity provider, and PostgreSQL. Nobody touches the product: after each restart everything must
resume by itself (mail imported, replies sent, every mailbox "connected" again), and at the end every mail
is an article once and every reply was sent.

Access tokens are made short-lived for this scenario, so the workers refresh them all the time and the
identity provider's restart meets refreshes, not only Dovecot's and the SMTP server's token checks.
"""
from __future__ import annotations

import threading
import time

from tests.faults.campaign import Campaign
from tests.faults.checks import check_articles, check_connected, check_replies
from tests.faults.harness import Events, Outcome, ScenarioFailed, settles, wait_for
from tests.faults.installation import Tuning
from tests.faults.mails import make_mails, put_in_maildir
from tests.faults.observe import Observer
from tests.faults.traffic import Traffic
from tests.faults.world import Received, message_id_of

ACCESS_TOKEN_LIFETIME = 330  # msal refreshes a token with under 5 minutes left: after 30 s here
DOWN_SECONDS = 2.0
MAILBOXES = 3


def server_restarts(c: Campaign, workers: int = 1) -> Outcome:
    name, size = "server-restarts", c.size
    rng = c.rng(f"{name}-{workers}")
    started = time.monotonic()
    out = Outcome(name, c.databases.kind, workers, "Dovecot, the SMTP server, the IdP" +
                  (" and PostgreSQL" if c.databases.restartable else "") + " restarted mid-run")
    # With several workers a reply left "sending" longer than the sending lease is taken for a crash's by
    # another worker, whose sent-folder lookup may come before the server filed the copy: a slow send on a
    # loaded machine would then be sent twice. The lease must outlast a submission.
    sending_lease = 5 if workers == 1 else 20
    tuning = Tuning(lease_seconds=5, sending_lease_seconds=sending_lease)
    out.settings = (f"lease_seconds 5, sending_lease_seconds {sending_lease}, access tokens valid "
                    f"{ACCESS_TOKEN_LIFETIME} s "
                    f"(refreshed every 30 s), each server down {DOWN_SECONDS:.0f} s")
    installation = c.install(f"{name}-{workers}w", tuning)
    observer = Observer(installation.database_url)
    idp = c.world.idp
    lifetime_before = idp.access_token_lifetime
    events = Events()
    traffic = None
    at_data = _RestartAtData(c)
    remove_hook = c.world.add_data_hook(at_data)
    try:
        idp.access_token_lifetime = ACCESS_TOKEN_LIFETIME
        mailboxes = {}
        tag = c.tag(f"{name}{workers}")
        for i in range(MAILBOXES):
            address = c.world.add_mailbox(f"{tag}m{i}")
            mailboxes[installation.connect(address)] = address
        first = {}
        for account, address in mailboxes.items():
            first[account] = make_mails(rng, f"{tag}.first{account}", 5, to=address, attachment_share=0)
            put_in_maildir(c.world.dovecot, address, first[account])
        for _ in range(workers):
            installation.start_worker()
        wait_for(lambda: all(observer.incoming(a) >= len(first[a]) for a in mailboxes), 120,
                 "the first mails imported", watch=installation.workers)
        traffic = Traffic(c.world, installation, rng, tag, mailboxes, reply_every=3)
        traffic.start()
        plan = ["dovecot", "smtp", "smtp-at-data", "idp"] + (["postgresql"] if c.databases.restartable else [])
        for round_ in range(size.restart_rounds):
            order = list(plan)
            rng.shuffle(order)
            # Full size: everything settles after each restart, which times each server's recovery. CI size:
            # the servers go down one after another with traffic between, and it all settles once at the end.
            groups = [[server] for server in order] if size.settle_each_restart else [order]
            for group in groups:
                for server in group:
                    traffic.resume()
                    time.sleep(rng.uniform(1.0, 3.0))  # traffic before the restart
                    _restart(c, server, at_data, events, rng)
                back = time.monotonic()
                time.sleep(rng.uniform(0.5, 1.5))  # and some during the recovery
                traffic.pause()
                if traffic.error is not None:
                    raise ScenarioFailed(f"the traffic failed: {traffic.error!r}")
                settled = settles(lambda: _all_done(installation, observer, traffic, mailboxes, first),
                                  size.settle_seconds, state=lambda: _progress(observer, mailboxes))
                resumed = time.monotonic() - back
                name = " + ".join(group)
                out.restarts.extend({"server": server, "resume_seconds": round(resumed, 1) if settled else None}
                                    for server in group)
                c.log(f"  {name} restarted: " + (f"everything done again {resumed:.1f} s after it was back"
                                                  if settled else "did NOT settle"))
                if not settled:
                    out.notes.append(f"after the restart of {name} the work did not settle within "
                                     f"{size.settle_seconds:.0f} s")
                    break
        traffic.stop()
        settles(lambda: _all_done(installation, observer, traffic, mailboxes, first), size.settle_seconds,
                state=lambda: _progress(observer, mailboxes))
        for account in mailboxes:
            check_articles(out, observer, account, first[account] + traffic.mails[account], bodies=False)
        reply_ids = list(observer.outbox())
        explained = events.explain_twice(c.world.submissions, reply_ids, why=_why_twice)
        check_replies(out, c.world, observer, reply_ids, explained)
        check_connected(out, installation)
    finally:
        if traffic is not None:
            traffic.stop()
        remove_hook()
        idp.access_token_lifetime = lifetime_before
        observer.close()
        installation.stop()
        out.seconds = time.monotonic() - started
    return out


class _RestartAtData:
    """When armed, holds the next DATA's 250 and lets the scenario restart the SMTP server under it."""

    def __init__(self, c: Campaign) -> None:
        self.c = c
        self.armed = False
        self.taken = threading.Event()
        self.message_id = ""

    def __call__(self, received: Received) -> None:
        if not self.armed:
            return
        self.armed = False
        self.message_id = message_id_of(received.raw)
        self.taken.set()
        time.sleep(1.0)  # the 250 waits; meanwhile the server is stopped and the session cut


def _restart(c: Campaign, server: str, at_data: _RestartAtData, events: Events, rng) -> None:
    """Restart one server; the event is recorded at the moment it goes down."""
    world = c.world
    if server == "dovecot":
        events.add("Dovecot restarted")
        world.restart_dovecot(DOWN_SECONDS)
    elif server == "smtp":
        events.add(SMTP_RESTART)
        world.restart_smtp(DOWN_SECONDS)
    elif server == "smtp-at-data":
        at_data.taken.clear()
        at_data.armed = True
        wait_for(at_data.taken.is_set, 120, "a reply's DATA to restart the SMTP server under")
        events.add(f"{SMTP_RESTART} while it held the 250 for {at_data.message_id}")
        world.restart_smtp(DOWN_SECONDS)
    elif server == "idp":
        events.add("the identity provider restarted")
        world.restart_idp(DOWN_SECONDS)
    elif server == "postgresql":
        events.add("PostgreSQL restarted")
        c.databases.restart()
    else:
        raise ValueError(server)


SMTP_RESTART = "the SMTP server restarted"


def _why_twice(message_id: str, faults: str) -> str:
    """A reply the SMTP server took twice, with the faults between. After a restart of the SMTP server that
    cut the session before the 250 (the worker saw a broken connection after it had handed the mail over), the
    worker must leave the reply "sending" for the sent-folder lookup: a second acceptance is still a finding.
    The restart is recorded just before the server stops, so a DATA it finished while stopping may come
    after the recorded moment: the explanation then names only later faults."""
    if SMTP_RESTART in faults:
        return ("session cut: the SMTP server took the reply, then restarted before its 250 reached the worker, "
                f"which sent it again instead of leaving it to the sent-folder lookup; faults between: {faults}")
    return f"accepted again after: {faults}"


def _progress(observer: Observer, mailboxes: dict[int, str]) -> tuple:
    return tuple(observer.incoming(a) for a in mailboxes) + (observer.sent(),)


def _all_done(installation, observer: Observer, traffic: Traffic, mailboxes: dict[int, str], first) -> bool:
    """Every mail delivered so far imported, every reply queued so far sent, every mailbox connected."""
    for account in mailboxes:
        if observer.incoming(account) < len(first[account]) + len(traffic.mails[account]):
            return False
    states = observer.outbox()
    if len(states) < traffic.replies or any(state != "sent" for state in states.values()):
        return False
    try:
        return all(a["status"] == "connected" for a in installation.accounts())
    except Exception:  # noqa: BLE001 - the web app's database may be restarting
        return False
