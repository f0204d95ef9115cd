"""Dovecot, the SMTP server, the identity provider and PostgreSQL restarted mid-run: everything resumes
without a person (see tests/faults/scenario_restart.py)."""
from __future__ import annotations

import pytest

from tests.faults.conftest import SEED, SIZE
from tests.faults.scenarios import BY_NAME, verdict

# A scenario runs for one to three minutes at CI size (more when it finds something: it waits out stalls).
pytestmark = pytest.mark.timeout(600 if SIZE.name == "ci" else 3600)


def check(campaign, name: str, database: str):
    c = campaign(database)
    scenario = BY_NAME[name]
    out = scenario.run(c)
    problems = verdict(scenario, c, out)
    assert not problems, f"{out.summary()} (seed {SEED}, size {SIZE.name}):\n" + "\n".join(problems + out.notes)
    assert all(r["resume_seconds"] is not None for r in out.restarts), out.restarts
    # A session cut between the server taking DATA and its 250 included: the reply is left to the sent-folder
    # lookup, never sent again blindly (tests/outbox/test_send_once.py).
    assert not out.replies_twice, out.replies_twice
    return out


@pytest.mark.skipif(SIZE.name != "full", reason="full campaign only: CI restarts every server under three workers "
                                                "on PostgreSQL (test below)")
def test_servers_restarted_under_one_worker_on_sqlite(campaign):
    out = check(campaign, "server-restarts", "sqlite")
    assert {r["server"] for r in out.restarts} == {"dovecot", "smtp", "smtp-at-data", "idp"}


def test_servers_and_postgresql_restarted_under_three_workers(campaign):
    out = check(campaign, "server-restarts-3w", "postgresql")
    assert {r["server"] for r in out.restarts} == {"dovecot", "smtp", "smtp-at-data", "idp", "postgresql"}
