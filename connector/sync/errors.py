"""What a pass reports, and how it fails."""
from __future__ import annotations

from dataclasses import dataclass, field


class SyncError(Exception):
    """A pass could not run; `message` is for people, `retry_after` in seconds, `reconnect` if tokens are gone."""

    def __init__(self, message: str, *, retry_after: float | None = None, reconnect: bool = False) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.reconnect = reconnect


class LeaseLost(Exception):
    """Another worker holds this mailbox now: what this one was about to commit was rolled back."""


@dataclass
class PassResult:
    imported: int = 0
    duplicates: int = 0
    ignored: int = 0
    quarantined: int = 0
    failed: int = 0
    deferred: int = 0  # of the imported, how many wait for their body to be extracted (extract.py)
    ticket_ids: set[int] = field(default_factory=set)
    # where the pass's time went, in seconds (import_pass.py): "list" (select the folder, find the new UIDs),
    # "fetch" (waiting for fetched, parsed and, on SQLite, durably packed mail), "store" (ingest and commit)
    timings: dict[str, float] = field(default_factory=dict)

    def spent(self, phase: str, seconds: float) -> None:
        self.timings[phase] = self.timings.get(phase, 0.0) + seconds

    def summary(self) -> str:
        return (f"{self.imported} imported, {self.duplicates} already known, {self.ignored} ignored, "
                f"{self.quarantined} quarantined, {self.failed} to retry")
