"""Kill -9 of a `connector worker` while it sends replies.

Replies are queued through the REST API in waves. In a "data" wave the SMTP server's DATA hook kills the
worker at the moment the server has taken a chosen reply's DATA (filed it in Sent Items, as Exchange
does), before the server writes its 250: the worker cannot have recorded the reply as sent, and the kill
is checked to have found it "sending". Its only defence against sending it again is the sent-folder
lookup it makes for replies a crash left "sending". In a "random" wave the kill comes at a random
moment once some of the wave went out. Every reply must end "sent", accepted by the server once.
"""
from __future__ import annotations

import threading
import time

from tests.faults.campaign import Campaign
from tests.faults.checks import check_connected, check_replies
from tests.faults.harness import Events, Kill, Outcome, ScenarioFailed, settles, wait_for
from tests.faults.installation import Installation, ProductProcess, Tuning
from tests.faults.mails import make_mails, put_in_maildir
from tests.faults.observe import Observer
from tests.faults.world import Received, message_id_of

PHASE_TIMEOUT = 120.0


class DataKill:
    """Kills the current worker from inside the SMTP server, when the n-th DATA from now completes."""

    def __init__(self, observer: Observer) -> None:
        self.observer = observer
        self.worker: ProductProcess | None = None
        self.countdown: int | None = None
        self.fired = threading.Event()
        self.message_id = ""
        self.moment = 0.0
        self.state_after: str | None = None
        self._lock = threading.Lock()

    def arm(self, worker: ProductProcess, nth: int) -> None:
        with self._lock:
            self.worker, self.countdown = worker, nth
            self.fired.clear()

    def __call__(self, received: Received) -> None:
        with self._lock:
            if self.countdown is None:
                return
            self.countdown -= 1
            if self.countdown > 0:
                return
            self.countdown = None
            worker = self.worker
        self.message_id = message_id_of(received.raw)
        self.moment = worker.kill()  # the server's 250 waits for this hook: the worker dies before it
        self.state_after = self.observer.outbox().get(self.message_id)
        self.fired.set()


def sending(c: Campaign) -> Outcome:
    name, size = "sending", c.size
    rng = c.rng(name)
    started = time.monotonic()
    out = Outcome(name, c.databases.kind, 1, "sending replies (between the end of DATA and the commit; random moments)")
    tuning = Tuning(lease_seconds=3, sending_lease_seconds=5)
    out.settings = "lease_seconds 3, sending_lease_seconds 5"
    installation = c.install(name, tuning)
    observer = Observer(installation.database_url)
    events = Events()
    data_kill = DataKill(observer)
    remove_hook = c.world.add_data_hook(data_kill)
    try:
        address = c.world.add_mailbox(c.tag(name))
        account = installation.connect(address)
        plan = ["data"] * size.sending_data_kills + ["random"] * size.sending_random_kills
        rng.shuffle(plan)
        tickets = make_mails(rng, c.tag(name), max(4, size.sending_replies // 2), to=address, attachment_share=0)
        put_in_maildir(c.world.dovecot, address, tickets)
        worker = installation.start_worker()
        wait_for(lambda: observer.incoming(account) >= len(tickets), PHASE_TIMEOUT, "the tickets to answer",
                 watch=[worker])
        ticket_ids = [t["id"] for t in installation.tickets(address)]
        waves = _waves(size.sending_replies, len(plan) + 1)
        queued = 0

        def queue(count: int) -> None:
            nonlocal queued
            for _ in range(count):
                queued += 1
                installation.reply(rng.choice(ticket_ids), f"Answer {queued} of the fault campaign.\n\nRegards")

        for kind, wave in zip(plan, waves):
            if kind == "data":
                worker = _data_wave(c, out, events, installation, observer, data_kill, worker, wave, queue, rng)
            else:
                worker = _random_wave(c, out, events, installation, observer, worker, wave, queue, rng)
        queue(waves[-1])
        settles(lambda: all(state == "sent" for state in observer.outbox().values()), size.settle_seconds)
        reply_ids = list(observer.outbox())
        explained = events.explain_twice(c.world.submissions, reply_ids, why=lambda mid, faults: (
            f"defence failed: accepted again after {faults}, although the first copy was filed in Sent Items"
            if mid in c.world.sent_items(address) else f"accepted again after {faults}; no copy in Sent Items"))
        check_replies(out, c.world, observer, reply_ids, explained)
        check_connected(out, installation)
    finally:
        remove_hook()
        observer.close()
        installation.stop()
        out.seconds = time.monotonic() - started
    return out


def _waves(total: int, count: int) -> list[int]:
    """`total` replies in `count` waves of at least two."""
    base = max(2, total // count)
    return [base] * count


def _data_wave(c, out, events, installation: Installation, observer: Observer, data_kill: DataKill,
               worker: ProductProcess, wave: int, queue, rng) -> ProductProcess:
    nth = rng.randint(1, wave)
    data_kill.arm(worker, nth)
    queue(wave)
    wait_for(data_kill.fired.is_set, PHASE_TIMEOUT, f"the DATA of reply {nth} of a wave", watch=[worker])
    mid = data_kill.message_id
    if data_kill.state_after != "sending":
        raise ScenarioFailed(f"the kill at DATA found {mid} {data_kill.state_after!r}, not 'sending'")
    events.add(f"the worker was killed when the SMTP server had taken the DATA of {mid}, before its 250",
               data_kill.moment)
    sent = observer.sent()
    kill = Kill(out.name, "sending", f"the server had taken {mid}'s DATA and not yet answered 250; the reply was "
                                     "'sending'", sent, sent, len(observer.outbox()))
    out.kills.append(kill)
    worker = installation.start_worker()
    wait_for(lambda: observer.outbox().get(mid) == "sent", PHASE_TIMEOUT, f"{mid} recorded as sent after the kill",
             watch=[worker])
    kill.resume_seconds = time.monotonic() - data_kill.moment
    c.log(f"  kill {len(out.kills)} (at DATA): {mid}; sent after {kill.resume_seconds:.1f} s")
    return worker


def _random_wave(c, out, events, installation: Installation, observer: Observer, worker: ProductProcess,
                 wave: int, queue, rng) -> ProductProcess:
    """Queue a wave and kill at a random moment once part of it went out; if the whole wave went out during
    the random delay (a small wave goes out in tens of milliseconds on a quiet machine), queue another twice
    as big, up to six times."""
    wave = max(3, wave)
    for attempt in range(6):
        wave = wave * 2 if attempt else wave
        born = observer.sent()
        queue(wave)
        goal = born + wave
        threshold = born + rng.randint(1, wave - 1)
        wait_for(lambda: observer.sent() >= threshold, PHASE_TIMEOUT, "replies of a wave going out", watch=[worker])
        time.sleep(rng.uniform(0, 0.1))
        before = observer.sent()
        if before >= goal:
            out.not_made += 1
            continue
        moment = worker.kill()
        after = observer.sent()
        if not (born < before <= after < goal):
            out.notes.append(f"a random kill missed the sending ({born} -> {before} -> {after} of {goal}); "
                             "not counted")
            return installation.start_worker()
        events.add("the worker was killed at a random moment while sending", moment)
        kill = Kill(out.name, "sending", f"{after} of {goal} replies sent", before, after, goal)
        out.kills.append(kill)
        worker = installation.start_worker()
        wait_for(lambda: observer.sent() > after, PHASE_TIMEOUT, "sending resuming after a kill", watch=[worker])
        kill.resume_seconds = time.monotonic() - moment
        c.log(f"  kill {len(out.kills)} (random): {kill.detail}; resumed after {kill.resume_seconds:.1f} s")
        return worker
    return worker
