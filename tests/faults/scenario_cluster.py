"""Three `connector worker` processes sharing one database (PostgreSQL: several machines share it), one
of them killed at a time while mail comes in (a backlog in each mailbox, then a trickle) and replies go
out. The victim is always a worker that holds at least one mailbox's lease when it dies (read from the
database just before); the others must take its mailboxes over within the lease (plus one scheduler
tick), and the mailboxes must work again (a probe mail in each becomes an article). A new worker then
replaces the dead one. At the end every mail is an article once and every reply was sent once.
"""
from __future__ import annotations

import threading
import time

from tests.faults.campaign import Campaign
from tests.faults.checks import check_articles, check_connected, check_replies
from tests.faults.harness import Events, Kill, Outcome, ScenarioFailed, settles, wait_for
from tests.faults.installation import Installation, Tuning
from tests.faults.mails import deliver, make_mails, put_in_maildir
from tests.faults.observe import Observer, pid_of
from tests.faults.traffic import Traffic

LEASE_SECONDS = 5
SCHEDULER_TICK = 2.0  # a worker looks for mailboxes without a live lease this often
TAKEOVER_SLACK = 2.0  # a loaded 2-core machine: starting the pass after the claim


class LeaseWatch(threading.Thread):
    """Samples the mailboxes' leases and notes each time a live worker's lease ran out (it was still syncing, or
    about to, without a current lease) and each time another worker then took that mailbox while the first
    was still alive: two workers may then have synced the same mailbox at once."""

    def __init__(self, observer: Observer, installation: Installation) -> None:
        super().__init__(name="lease-watch", daemon=True)
        self.observer, self.installation = observer, installation
        self.stopped = threading.Event()
        self.lapses: list[str] = []
        self.taken_from_live: list[str] = []
        self._lapsed: dict[int, int] = {}  # mailbox -> pid of the live worker whose lease ran out

    def run(self) -> None:
        while not self.stopped.wait(0.2):
            try:
                leases = self.observer.leases()
            except Exception:  # noqa: BLE001 - the database may be restarting
                continue
            alive = {w.pid for w in self.installation.live_workers()}
            for account, (owner, current) in leases.items():
                pid = pid_of(owner)
                if pid is None:
                    self._lapsed.pop(account, None)  # released
                elif not current and pid in alive:
                    if self._lapsed.get(account) != pid:
                        self.lapses.append(f"mailbox {account}: the lease of worker {pid} ran out while it ran")
                    self._lapsed[account] = pid
                elif current:
                    before = self._lapsed.pop(account, None)
                    if before is not None and before != pid and before in alive:
                        self.taken_from_live.append(f"mailbox {account}: worker {pid} took it while worker "
                                                    f"{before} was alive")


def three_workers(c: Campaign) -> Outcome:
    name, size = "three-workers", c.size
    rng = c.rng(name)
    started = time.monotonic()
    out = Outcome(name, c.databases.kind, 3, "three workers, one killed at a time (the others take over)")
    out.settings = f"lease_seconds {LEASE_SECONDS}, sending_lease_seconds 20, {size.cluster_mailboxes} mailboxes " \
                   f"with {size.cluster_backlog} mails waiting each, then a trickle and replies"
    # the sending lease is neither renewed nor fenced: with several workers it must outlast the slowest send
    installation = c.install(name, Tuning(lease_seconds=LEASE_SECONDS, sending_lease_seconds=20))
    observer = Observer(installation.database_url)
    events = Events()
    traffic = watch = None
    try:
        tag = c.tag(name)
        mailboxes: dict[int, str] = {}
        backlog: dict[int, list] = {}
        for i in range(size.cluster_mailboxes):
            address = c.world.add_mailbox(f"{tag}m{i}")
            account = installation.connect(address)
            mailboxes[account] = address
            backlog[account] = make_mails(rng, f"{tag}.b{account}", size.cluster_backlog, to=address)
            put_in_maildir(c.world.dovecot, address, backlog[account])
        probes: dict[int, list] = {account: [] for account in mailboxes}
        for _ in range(3):
            installation.start_worker()
        watch = LeaseWatch(observer, installation)
        watch.start()
        wait_for(lambda: any(observer.incoming(a) for a in mailboxes), 120, "the first mails imported",
                 watch=installation.workers)
        traffic = Traffic(c.world, installation, rng, tag, mailboxes, mail_gap=(0.1, 0.6), reply_every=3)
        traffic.start()
        traffic.resume()
        for _ in range(size.cluster_kills):
            time.sleep(rng.uniform(0.5, 4.0))
            _kill_one(c, out, events, installation, observer, rng, mailboxes, probes)
        traffic.stop()
        if traffic.error is not None:
            raise ScenarioFailed(f"the traffic failed: {traffic.error!r}")
        expected = {a: backlog[a] + probes[a] + traffic.mails[a] for a in mailboxes}
        settles(lambda: all(observer.incoming(a) >= len(expected[a]) for a in mailboxes)
                and all(state == "sent" for state in observer.outbox().values()), size.settle_seconds,
                state=lambda: tuple(observer.incoming(a) for a in mailboxes) + (observer.sent(),))
        for account in mailboxes:
            check_articles(out, observer, account, expected[account], bodies=False)
        reply_ids = list(observer.outbox())
        check_replies(out, c.world, observer, reply_ids,
                      events.explain_twice(c.world.submissions, reply_ids,
                                           why=lambda mid, faults: f"accepted again after: {faults}"))
        check_connected(out, installation)
        if watch.lapses:
            out.notes.append(f"{len(watch.lapses)} times a live worker's lease ran out (no renewal during a long "
                             f"pass), {len(watch.taken_from_live)} times another worker then took the mailbox while "
                             f"the first was alive: " + "; ".join((watch.taken_from_live or watch.lapses)[:3]))
    finally:
        if traffic is not None:
            traffic.stop()
        if watch is not None:
            watch.stopped.set()
        observer.close()
        installation.stop()
        out.seconds = time.monotonic() - started
    return out


def _kill_one(c: Campaign, out: Outcome, events: Events, installation: Installation, observer: Observer, rng,
              mailboxes: dict[int, str], probes: dict[int, list]) -> None:
    def holding() -> dict[int, list[int]]:
        alive = {w.pid for w in installation.live_workers()}
        found: dict[int, list[int]] = {}
        for account, owner in observer.lease_holders().items():
            pid = pid_of(owner)
            if pid in alive and account in mailboxes:
                found.setdefault(pid, []).append(account)
        return found
    held_by = wait_for(holding, 60, "a live worker holding a mailbox", watch=installation.live_workers())
    victim_pid = rng.choice(sorted(held_by))
    victim = next(w for w in installation.live_workers() if w.pid == victim_pid)
    held = held_by[victim_pid]
    moment = victim.kill()
    events.add(f"worker {victim_pid} killed holding mailboxes {held}", moment)
    others = lambda: {w.pid for w in installation.live_workers()}  # noqa: E731
    wait_for(lambda: all(pid_of(observer.lease_holders().get(a)) in others() for a in held),
             LEASE_SECONDS + 60, f"the mailboxes {held} of the killed worker taken over",
             watch=installation.live_workers())
    takeover = time.monotonic() - moment
    for account in held:  # and they work again: new mail in each becomes an article
        probe = make_mails(rng, f"{c.tag('probe')}.{account}", 1, to=mailboxes[account], attachment_share=0,
                           start=len(probes[account]))[0]
        deliver(c.world.dovecot, mailboxes[account], probe)
        probes[account].append(probe)
    wait_for(lambda: all(probes[a][-1].message_id in _ids(observer, a) for a in held), 120,
             "a probe mail in each taken-over mailbox imported", watch=installation.live_workers())
    resumed = time.monotonic() - moment
    bound = LEASE_SECONDS + SCHEDULER_TICK + TAKEOVER_SLACK
    kill = Kill(out.name, "syncing", f"worker {victim_pid} held {len(held)} of {len(mailboxes)} mailboxes; taken over "
                                     f"after {takeover:.1f} s", len(held), len(held), len(mailboxes), resumed)
    out.kills.append(kill)
    out.takeovers.append(round(takeover, 1))
    if takeover > bound:
        out.late.append(f"mailboxes {held} taken over {takeover:.1f} s after the kill (bound {bound:.0f} s)")
    c.log(f"  kill {len(out.kills)}: {kill.detail}; probe imported after {resumed:.1f} s")
    installation.start_worker()


def _ids(observer: Observer, account: int) -> set[str]:
    return {mid for (_, mid) in observer.incoming_by_message_id([account])}
