"""Kill -9 of a `connector worker` while it reads mail: a big first import, mail trickling in, the body
extraction a big import leaves, and the post-import move and delete.

Each kill is aimed at a phase and checked to have hit it: the phase's progress (articles committed,
bodies extracted, mails gone from INBOX) moved during this worker's life before the kill, and was short
of the end once the process was dead. A kill that lands after the phase ended does not count as one.
After each kill a new worker starts at once (as systemd would restart it); the time to resume runs from
the kill until the progress moves again (a new worker waits out the dead one's lease first).
"""
from __future__ import annotations

import random
import threading
import time
from typing import Callable

from tests.faults.campaign import Campaign
from tests.faults.checks import check_articles, check_connected, check_placement
from tests.faults.harness import Kill, Outcome, ScenarioFailed, Stalled, settles, wait_for, wait_for_progress
from tests.faults.installation import Installation, Tuning
from tests.faults.mails import Mail, deliver, folder_count, make_mails, put_in_maildir
from tests.faults.observe import Observer

STALL = 30.0  # seconds without progress that mean the work stopped (a slow, shared 2-core machine: generous)


def pack_files(installation: Installation) -> int:
    """Pack files on disk (SQLite keeps raw mail in them, written and fsynced before each commit)."""
    return sum(1 for _ in (installation.directory / "instance").glob("connector-blobs/**/*.pack"))


def next_threshold(rng: random.Random, done: int, total: int, kills_left: int) -> int:
    """A random point in the next share of the remaining work, so that later kills still find work."""
    share = max(1, (total - done) // (kills_left + 1))
    return done + rng.randint(1, share)


class Killer:
    """Kills one scenario's worker at chosen moments, restarts it, and records each kill."""

    def __init__(self, c: Campaign, out: Outcome, installation: Installation, rng: random.Random,
                 progress: Callable[[], int], phase: str, address: str) -> None:
        self.c, self.out, self.installation, self.rng = c, out, installation, rng
        self.progress, self.phase, self.address = progress, phase, address
        self.logins_before = c.world.imap_logins(address)
        self.worker = installation.start_worker()
        self.born_at = 0  # the progress when the current worker started its work in this phase

    def kill_first_pass(self, total: int, jitter: float, detail: Callable[[int, int], str]) -> Kill | None:
        """Kill the worker that has just started, a random moment after it signed in to the mailbox (Dovecot logs
        the session): its first batch is being fetched, parsed and written, and (most often) nothing of it is
        committed yet. Counts if the work was still short of `total` once the process was dead."""
        wait_for(lambda: self.c.world.imap_logins(self.address) > self.logins_before, STALL,
                 "the worker signing in to the mailbox", watch=[self.worker])
        time.sleep(self.rng.uniform(0, jitter))
        before = self.progress()
        moment = self.worker.kill()
        after = self.progress()
        if after >= total:
            self.out.notes.append(f"the kill early in the first pass came after the {self.phase} ended; not counted")
            self._restart()
            return None
        when = "signed in, before its first commit" if after == self.born_at else "signed in, first batches committed"
        return self._record(Kill(self.out.name, self.phase, f"{when}: {detail(before, after)}", before, after, total),
                            moment)

    def kill_after(self, threshold: int, total: int | Callable[[], int], jitter: float,
                   detail: Callable[[int, int], str], in_phase: Callable[[], bool] = lambda: True) -> Kill | None:
        """Once progress reaches `threshold` (and `in_phase()`), wait a random moment of up to `jitter` s and
        kill; returns the Kill, or None if the phase had ended by then (no kill is made then). `total` (or
        what it returns just before the kill) is the progress that means the phase is done."""
        goal_of = total if callable(total) else (lambda: total)
        wait_for_progress(self.progress, threshold, self.phase, stall=STALL, watch=[self.worker], extra=in_phase)
        time.sleep(self.rng.uniform(0, jitter))
        before, goal = self.progress(), goal_of()
        if before >= goal:
            self.out.not_made += 1  # the phase ended during the random wait: no kill
            self.c.log(f"  no kill: the {self.phase} ended during the random wait ({before} of {goal})")
            return None
        moment = self.worker.kill()
        after = self.progress()
        started = self.born_at
        if not (started < before <= after < goal):
            self.out.notes.append(f"a kill missed the {self.phase} (progress {started} -> {before} -> {after} "
                                  f"of {goal}); not counted")
            self.c.log(f"  {self.out.notes[-1]}")
            self._restart()
            return None
        return self._record(Kill(self.out.name, self.phase, detail(before, after), before, after, goal), moment)

    def kill_when_seen(self, seen: Callable[[], bool], ended: Callable[[], bool], total: Callable[[], int],
                       detail: Callable[[int, int], str]) -> Kill | None:
        """Kill the moment `seen()`, a cheap look at the database, says the worker is inside the phase: no
        random wait and no slow look (doveadm) between seeing and killing, so a phase that lasts a fraction of
        a second is still hit. Returns None, with no kill, if `ended()` first (the caller adds mail). The kill
        counts if the progress, measured once the process was dead, had moved in this worker's life and was
        short of the end."""
        deadline = time.monotonic() + 2 * STALL
        while not seen():
            if ended():
                self.c.log(f"  the {self.phase} ended before it was seen (progress {self.progress()} of {total()})")
                return None
            if not self.worker.alive:
                raise ScenarioFailed(f"{self.worker.name} exited by itself while waiting for the {self.phase}:\n"
                                     f"{self.worker.log_tail()}")
            if time.monotonic() > deadline:
                raise Stalled(f"{self.phase}: not seen within {2 * STALL:.0f} s")
            time.sleep(0.005)
        moment = self.worker.kill()
        after, goal = self.progress(), total()  # nothing moves any more: this is where the kill landed
        if not (self.born_at < after < goal):
            self.out.notes.append(f"a kill missed the {self.phase} (progress {self.born_at} -> {after} of {goal} "
                                  "once the worker was dead); not counted")
            self.c.log(f"  {self.out.notes[-1]}")
            self._restart()
            return None
        return self._record(Kill(self.out.name, self.phase, detail(after, after), after, after, goal), moment)

    def _record(self, kill: Kill, moment: float) -> Kill:
        after = kill.after
        self.out.kills.append(kill)
        self._restart()
        wait_for_progress(self.progress, after + 1, f"{self.phase} resuming after a kill", stall=STALL + 10,
                          watch=[self.worker])
        kill.resume_seconds = time.monotonic() - moment
        self.c.log(f"  kill {len(self.out.kills)}: {kill.detail}; resumed after {kill.resume_seconds:.1f} s")
        return kill

    def _restart(self) -> None:
        self.born_at = self.progress()
        self.logins_before = self.c.world.imap_logins(self.address)
        self.worker = self.installation.start_worker()


def _new_mailbox(c: Campaign, installation: Installation, name: str) -> tuple[int, str]:
    address = c.world.add_mailbox(c.tag(name))
    return installation.connect(address), address


class Backlog:
    """The mails of one mailbox, put into its Maildir in rounds: a scenario whose phase ended before all its
    kills were made adds another round (a mailbox back after an outage takes the same path as a first import)."""

    def __init__(self, c: Campaign, rng: random.Random, tag: str, address: str, per_round: int,
                 attachment_share: float) -> None:
        self.c, self.rng, self.tag, self.address = c, rng, tag, address
        self.per_round, self.attachment_share = per_round, attachment_share
        self.mails: list[Mail] = []
        self.rounds = 0

    def add_round(self, scale: int = 1) -> None:
        """Another round of mail: `scale` times the usual count (a round that no kill landed in was too quick)."""
        mails = make_mails(self.rng, self.tag, self.per_round * scale, to=self.address,
                           attachment_share=self.attachment_share, start=len(self.mails))
        put_in_maildir(self.c.world.dovecot, self.address, mails)
        self.mails.extend(mails)
        self.rounds += 1

    @property
    def total(self) -> int:
        return len(self.mails)


class _Doubled:
    """A backlog whose work is two steps a mail (committed, then moved or deleted)."""

    def __init__(self, backlog: Backlog) -> None:
        self.backlog = backlog

    @property
    def total(self) -> int:
        return 2 * self.backlog.total

    @property
    def rounds(self) -> int:
        return self.backlog.rounds

    def add_round(self, scale: int = 1) -> None:
        self.backlog.add_round(scale)


def kill_repeatedly(killer: Killer, backlog: "Backlog | _Doubled", planned: int, jitter: float,
                    detail: Callable[[int, int], str], in_phase: Callable[[], bool] = lambda: True,
                    first_pass: bool = False, aim: Callable[[int], tuple[Callable[[], bool],
                                                                         Callable[[], bool]]] | None = None) -> None:
    """Make `planned` kills in the killer's phase, at seeded random points spread over the work left; when
    the phase has finished first, give it another round of mail. With `first_pass`, the first kill comes
    early in the first worker's first pass (see Killer.kill_first_pass). With `aim`, which turns a threshold
    into (seen, ended) looks at the database, a kill comes the moment the phase is seen past the threshold
    (Killer.kill_when_seen) rather than after a random wait."""
    if first_pass and planned:
        try:
            killer.kill_first_pass(backlog.total, jitter=0.3, detail=detail)
        except Stalled as exc:
            killer.out.notes.append(f"{exc}: no more kills")
            return
    scale, kills_at_round = 1, len(killer.out.kills)
    while len(killer.out.kills) < planned:
        done = killer.progress()
        if done >= backlog.total:
            if backlog.rounds >= max(5, 2 * planned + 1):  # a fast machine may finish a round before a kill lands
                raise ScenarioFailed(f"{len(killer.out.kills)} of {planned} kills hit the {killer.phase} in "
                                     f"{backlog.rounds} rounds of mail")
            # A round that ended before any kill landed was too short for this machine: the next one is longer.
            scale = min(8, scale * 2) if len(killer.out.kills) == kills_at_round else 1
            kills_at_round = len(killer.out.kills)
            killer.c.log(f"  round {backlog.rounds + 1} of mail for the {killer.phase}" +
                         (f" ({scale} times as much: no kill landed in the last one)" if scale > 1 else ""))
            backlog.add_round(scale)
            continue
        threshold = next_threshold(killer.rng, done, backlog.total, planned - len(killer.out.kills))
        try:
            if aim is not None:
                killer.kill_when_seen(*aim(threshold), lambda: backlog.total, detail)
            else:
                killer.kill_after(threshold, lambda: backlog.total, jitter, detail, in_phase)
        except Stalled as exc:
            killer.out.notes.append(f"{exc}: no more kills")
            return


def big_import(c: Campaign) -> Outcome:
    """Hundreds to thousands of mails waiting when the mailbox is connected: fetched in batches of the
    default size, parsed headers first, raw mail written to pack files while the next batch is fetched."""
    name, size = "big-import", c.size
    rng = c.rng(name)
    started = time.monotonic()
    out = Outcome(name, c.databases.kind, 1, "a big first import (headers first, pack files being written)")
    installation = c.install(name, Tuning(lease_seconds=3))
    out.settings = "lease_seconds 3, fetch_batch_size default (200)"
    observer = Observer(installation.database_url)
    try:
        account, address = _new_mailbox(c, installation, name)
        backlog = Backlog(c, rng, c.tag(name), address, size.big_import_mails, attachment_share=0.2)
        backlog.add_round()
        killer = Killer(c, out, installation, rng, lambda: observer.incoming(account), "big import", address)

        def detail(before: int, after: int) -> str:
            packs = f", {pack_files(installation)} pack files on disk" if c.databases.kind == "sqlite" else ""
            return (f"{after} of {backlog.total} mails committed, {after - observer.extracted(account)} of them "
                    f"still without body (headers first){packs}")
        kill_repeatedly(killer, backlog, size.big_import_kills, jitter=0.1, detail=detail, first_pass=True)
        settles(lambda: observer.incoming(account) >= backlog.total and observer.extracted(account) >= backlog.total,
                size.settle_seconds, state=lambda: (observer.incoming(account), observer.extracted(account)))
        check_articles(out, observer, account, backlog.mails)
        check_connected(out, installation)
    finally:
        observer.close()
        installation.stop()
        out.seconds = time.monotonic() - started
    return out


def bodies(c: Campaign) -> Outcome:
    """A big import done, its bodies and attachments being extracted from the stored raw mail."""
    name, size = "body-extraction", c.size
    rng = c.rng(name)
    started = time.monotonic()
    out = Outcome(name, c.databases.kind, 1, "body extraction after a big import")
    installation = c.install(name, Tuning(lease_seconds=3))
    out.settings = "lease_seconds 3, half the mails with a 20-120 KB attachment"
    observer = Observer(installation.database_url)
    try:
        account, address = _new_mailbox(c, installation, name)
        backlog = Backlog(c, rng, c.tag(name), address, size.bodies_mails, attachment_share=0.5)
        backlog.add_round()
        killer = Killer(c, out, installation, rng, lambda: observer.extracted(account), "body extraction",
                        address)
        imported = lambda: observer.incoming(account) >= backlog.total  # noqa: E731 - the phase follows the import
        kill_repeatedly(killer, backlog, size.bodies_kills, jitter=0.05, in_phase=imported,
                        detail=lambda before, after: f"all {backlog.total} mails imported, {after} bodies extracted")
        settles(lambda: observer.extracted(account) >= backlog.total, size.settle_seconds,
                state=lambda: observer.extracted(account))
        check_articles(out, observer, account, backlog.mails)
        check_connected(out, installation)
    finally:
        observer.close()
        installation.stop()
        out.seconds = time.monotonic() - started
    return out


def post_import(c: Campaign, action: str) -> Outcome:
    """The mailbox's post-import action ("move" to a folder, or "delete") running after each committed
    batch; progress is how many mails have left INBOX."""
    name, size = f"post-import-{action}", c.size
    rng = c.rng(name)
    started = time.monotonic()
    target = "Processed" if action == "move" else ""
    out = Outcome(name, c.databases.kind, 1, f"the post-import {action}" + (f" (to \"{target}\")" if target else ""))
    installation = c.install(name, Tuning(lease_seconds=3))
    out.settings = f"lease_seconds 3, post_import_action {action}"
    observer = Observer(installation.database_url)
    dovecot = c.world.dovecot
    try:
        account, address = _new_mailbox(c, installation, name)
        installation.set_post_import_action(account, action, target)
        backlog = Backlog(c, rng, c.tag(name), address, size.move_mails, attachment_share=0.3)
        backlog.add_round()
        # Progress counts both halves: mails committed, and mails gone from INBOX (the action runs after each
        # commit), so a kill between a commit and its action is a kill in the phase.
        moved = lambda: backlog.total - folder_count(dovecot, address)  # noqa: E731
        killer = Killer(c, out, installation, rng, lambda: observer.incoming(account) + moved(),
                        f"post-import {action}", address)
        work = _Doubled(backlog)

        def aim(threshold: int) -> tuple[Callable[[], bool], Callable[[], bool]]:
            """The phase as the database shows it: about threshold/2 mails committed (progress counts two steps
            a mail) and some committed mail whose action is not known to have run. A whole round takes under
            a second on a quiet machine, too quick to aim at with doveadm's counts (which prove the hit)."""
            committed = max(1, threshold // 2)

            def seen() -> bool:
                done, pending = observer.action_state(account)
                return done >= committed and pending

            def ended() -> bool:
                done, pending = observer.action_state(account)
                return done >= backlog.total and not pending
            return seen, ended
        kill_repeatedly(killer, work, size.move_kills, jitter=0.05, first_pass=size.move_kills > 1, aim=aim,
                        detail=lambda before, after: f"{observer.incoming(account)} of {backlog.total} committed, "
                                                     f"{moved()} {action}d")
        settles(lambda: observer.incoming(account) >= backlog.total and folder_count(dovecot, address) == 0,
                size.settle_seconds, state=lambda: (observer.incoming(account), folder_count(dovecot, address)))
        check_articles(out, observer, account, backlog.mails, bodies=False)
        check_placement(out, c.world, address, backlog.mails, action, target)
        check_connected(out, installation)
    finally:
        observer.close()
        installation.stop()
        out.seconds = time.monotonic() - started
    return out


class _Trickle(threading.Thread):
    """Delivers mail over LMTP in small bursts with pauses, as customers write in."""

    def __init__(self, c: Campaign, rng: random.Random, address: str, tag: str) -> None:
        super().__init__(name="trickle", daemon=True)
        self.c, self.rng, self.address, self.tag = c, rng, address, tag
        self.mails: list[Mail] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                burst = make_mails(self.rng, self.tag, self.rng.randint(2, 10), to=self.address,
                                   attachment_share=0.1, start=len(self.mails))
                for mail in burst:
                    deliver(self.c.world.dovecot, self.address, mail)
                    self.mails.append(mail)
                self.stop.wait(self.rng.uniform(0.1, 0.8))
        except BaseException as exc:  # noqa: BLE001 - reported by the scenario
            self.error = exc

    @property
    def delivered(self) -> int:
        return len(self.mails)


def trickle(c: Campaign) -> Outcome:
    """New mail arriving a few at a time (IDLE push, small batches parsed whole)."""
    name, size = "small-batches", c.size
    rng = c.rng(name)
    started = time.monotonic()
    out = Outcome(name, c.databases.kind, 1, "a small-batch import (mail trickling in)")
    installation = c.install(name, Tuning(lease_seconds=3))
    out.settings = "lease_seconds 3, bursts of 2-10 mails over LMTP every 0.1-0.8 s"
    observer = Observer(installation.database_url)
    feeder = None
    try:
        account, address = _new_mailbox(c, installation, name)
        killer = Killer(c, out, installation, rng, lambda: observer.incoming(account), "small-batch import",
                        address)
        feeder = _Trickle(c, random.Random(rng.random()), address, c.tag(name))
        feeder.start()
        attempts = 0
        while len(out.kills) < size.trickle_kills:
            attempts += 1
            if attempts > 4 * size.trickle_kills:
                raise ScenarioFailed(f"only {len(out.kills)} of {size.trickle_kills} kills found mail being imported")
            backlog = lambda: feeder.delivered > observer.incoming(account)  # noqa: E731
            killer.kill_after(killer.progress() + 1, lambda: feeder.delivered, jitter=0.03, in_phase=backlog,
                              detail=lambda before, after: f"{after} imported, {feeder.delivered} delivered")
        feeder.stop.set()
        feeder.join(30)
        if feeder.error is not None:
            raise ScenarioFailed(f"delivering mail failed: {feeder.error!r}")
        total = feeder.delivered
        settles(lambda: observer.incoming(account) >= total and observer.extracted(account) >= total,
                size.settle_seconds, state=lambda: (observer.incoming(account), observer.extracted(account)))
        check_articles(out, observer, account, feeder.mails)
        check_connected(out, installation)
    finally:
        if feeder is not None:
            feeder.stop.set()
        observer.close()
        installation.stop()
        out.seconds = time.monotonic() - started
    return out
