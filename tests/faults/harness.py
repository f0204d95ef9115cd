"""What every scenario of the campaign shares: waiting on conditions, the record of each kill, and the
outcome a scenario reports (what it checked, and every loss, duplicate or stuck mailbox it found)."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

from tests.faults.installation import ProductProcess


class ScenarioFailed(AssertionError):
    """The harness could not do what a scenario needs (a wait ran out, a product process died by itself)."""


def wait_for(condition: Callable[[], object], timeout: float, what: str, *,
             watch: Iterable[ProductProcess] = (), interval: float = 0.02) -> object:
    """Poll `condition` until it is true and return its value; raise ScenarioFailed after `timeout` seconds,
    or at once if a watched product process exited on its own (that is never what a wait waits for)."""
    deadline = time.monotonic() + timeout
    watched = list(watch)
    while True:
        value = condition()
        if value:
            return value
        for process in watched:
            if not process.alive and process.killed_at is None:
                raise ScenarioFailed(f"{process.name} exited by itself ({process.process.returncode}) while "
                                     f"waiting for {what}:\n{process.log_tail()}")
        if time.monotonic() > deadline:
            raise ScenarioFailed(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)


class Stalled(ScenarioFailed):
    """The work stopped moving: a finding about the product, reported by the checks that follow."""


def wait_for_progress(progress: Callable[[], int], target: int, what: str, *, stall: float,
                      watch: Iterable[ProductProcess] = (), extra: Callable[[], bool] = lambda: True) -> int:
    """Wait until `progress()` reaches `target` (and `extra()` holds); raise Stalled if the progress did not
    move for `stall` seconds, ScenarioFailed if a watched process exited by itself."""
    last, moved_at = progress(), time.monotonic()
    watched = list(watch)
    while True:
        value = progress()
        if value >= target and extra():
            return value
        now = time.monotonic()
        if value != last:
            last, moved_at = value, now
        elif now - moved_at > stall:
            raise Stalled(f"{what}: stuck at {value} (waiting for {target}) for {stall:.0f} s")
        for process in watched:
            if not process.alive and process.killed_at is None:
                raise ScenarioFailed(f"{process.name} exited by itself ({process.process.returncode}) while "
                                     f"waiting for {what}:\n{process.log_tail()}")
        time.sleep(0.02)


def settles(condition: Callable[[], object], timeout: float, *, state: Callable[[], object] | None = None,
            stall: float = 30.0, interval: float = 0.1) -> bool:
    """True once `condition` holds; False if it did not within `timeout`, or (with `state`) if what `state()`
    returns stopped changing for `stall` seconds. The caller's checks then say what is missing."""
    deadline = time.monotonic() + timeout
    last, changed_at = (state() if state else None), time.monotonic()
    while True:
        if condition():
            return True
        now = time.monotonic()
        if now > deadline:
            return False
        if state is not None:
            current = state()
            if current != last:
                last, changed_at = current, now
            elif now - changed_at > stall:
                return False
        time.sleep(interval)


@dataclass
class Kill:
    """One SIGKILL and what was seen around it."""
    scenario: str
    phase: str
    detail: str  # where in the phase, in words
    before: int  # the phase's progress seen just before the kill
    after: int  # the progress once the process was dead (nothing more can be committed by it)
    total: int  # the progress that means the phase is done
    resume_seconds: float | None = None  # from the kill until the work moved on again


@dataclass
class Outcome:
    """What a scenario checked and found. `problems()` is empty when nothing was lost, duplicated or stuck."""
    name: str
    database: str
    workers: int
    title: str
    kills: list[Kill] = field(default_factory=list)
    restarts: list[dict] = field(default_factory=list)  # {"server", "resume_seconds"}
    mails: int = 0  # mails checked in the database
    lost: list[str] = field(default_factory=list)  # Message-IDs that are not an article
    duplicated: list[str] = field(default_factory=list)  # Message-IDs that are an article more than once
    misplaced: list[str] = field(default_factory=list)  # move/delete: a mail where it should not be, or missing
    replies: int = 0
    replies_lost: list[str] = field(default_factory=list)  # queued and never accepted by the SMTP server, or not "sent"
    replies_twice: dict[str, str] = field(default_factory=dict)  # Message-ID -> why it was submitted twice
    stuck: list[str] = field(default_factory=list)  # mailboxes not "connected" at the end
    takeovers: list[float] = field(default_factory=list)  # seconds from a kill until the others held its mailboxes
    late: list[str] = field(default_factory=list)  # takeovers slower than the lease allows
    notes: list[str] = field(default_factory=list)
    not_made: int = 0  # planned kills not made because the phase had ended during the random wait
    seconds: float = 0.0
    settings: str = ""

    def problems(self) -> list[str]:
        found = []
        for label, items in (("lost", self.lost), ("duplicated", self.duplicated), ("misplaced", self.misplaced),
                             ("replies lost", self.replies_lost), ("stuck mailboxes", self.stuck),
                             ("late takeovers", self.late)):
            if items:
                shown = ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
                found.append(f"{len(items)} {label}: {shown}")
        if self.replies_twice:  # the sent-folder lookup covers every case, a session cut after DATA included
            found.append(f"{len(self.replies_twice)} replies accepted twice: " +
                         "; ".join(f"{mid}: {why}" for mid, why in list(self.replies_twice.items())[:3]))
        return found

    def summary(self) -> str:
        resumes = [k.resume_seconds for k in self.kills if k.resume_seconds is not None]
        worst = f", resume max {max(resumes):.1f} s" if resumes else ""
        return (f"{self.name} [{self.database}, {self.workers} worker(s)]: {len(self.kills)} kills, "
                f"{len(self.restarts)} restarts, {self.mails} mails, {self.replies} replies, lost {len(self.lost)}, "
                f"duplicated {len(self.duplicated)}, misplaced {len(self.misplaced)}, replies lost "
                f"{len(self.replies_lost)}, replies twice {len(self.replies_twice)}, stuck {len(self.stuck)}"
                f"{worst} ({self.seconds:.0f} s)")


class Events:
    """Faults as they happened (kills, server restarts), to explain a reply the SMTP server accepted twice."""

    def __init__(self) -> None:
        self.items: list[tuple[float, str]] = []

    def add(self, what: str, moment: float | None = None) -> None:
        self.items.append((time.monotonic() if moment is None else moment, what))

    def explain_twice(self, submissions: list[tuple[float, str]], message_ids: Iterable[str],
                      why: Callable[[str, str], str]) -> dict[str, str]:
        """Message-ID -> why(Message-ID, the faults between its first and second acceptance), or "unexplained"
        when nothing happened between them."""
        wanted = set(message_ids)
        times: dict[str, list[float]] = {}
        for moment, mid in submissions:
            if mid in wanted:
                times.setdefault(mid, []).append(moment)
        explained = {}
        for mid, moments in times.items():
            if len(moments) < 2:
                continue
            faults = [f"{what} (at {moment:.1f})" for moment, what in self.items if moments[0] <= moment <= moments[1]]
            explained[mid] = why(mid, "; ".join(faults)) if faults else \
                f"unexplained: accepted {len(moments)} times with no fault between the first two"
        return explained
