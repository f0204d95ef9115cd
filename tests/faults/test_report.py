"""RELIABILITY.md's figures come from the outcomes as they are (a tiny hand-made record, no servers)."""
from __future__ import annotations

import dataclasses

from bench.faults import document, report
from tests.faults.harness import Kill, Outcome


def record(*outcomes: Outcome) -> dict:
    return {"command": "python -m bench.faults --size full --seed 7", "seed": 7, "size": "full", "machine": "m",
            "date": "2026-12-02 10:00 UTC", "elapsed_seconds": 600, "failures": [],
            "outcomes": [dict(dataclasses.asdict(o), problems=o.problems()) for o in outcomes]}


def test_figures_count_what_the_outcomes_hold():
    ok = Outcome("big-import", "sqlite", 1, "a big import", mails=100, seconds=30,
                 kills=[Kill("big-import", "big import", "at 20", 20, 20, 100, 4.0),
                        Kill("big-import", "big import", "at 60", 60, 60, 100, 6.0)])
    bad = Outcome("post-import-move", "sqlite", 1, "the post-import move", mails=50, seconds=40,
                  kills=[Kill("post-import-move", "post-import move", "at 10", 10, 10, 100, None)],
                  misplaced=["<a@x> still in INBOX", "<b@x> still in INBOX"], replies=3,
                  replies_twice={"<r@x>": "session cut: the session broke before the 250",
                                 "<s@x>": "defence failed: accepted again"})
    lines = report(record(ok, bad))
    text = "\n".join(lines)
    assert "| kills (SIGKILL of a worker, each checked to have hit its phase) | 3 |" in text
    assert "| mails checked (each must be exactly one article) | 150 |" in text
    assert "| mails left in the wrong folder (post-import move/delete) | 2 |" in text
    assert "| replies the SMTP server accepted twice | 2 (1 after the session broke" in text and "1 other" in text
    assert "p50 4.0 s, p95 6.0 s, max 6.0 s" in text
    doc = "\n".join(document(record(ok, bad), lines))
    assert "2 misplaced" in doc and "**never resumed**" in doc and "Nothing lost, duplicated" in doc
    assert "`python -m bench.faults --size full --seed 7`" in doc
