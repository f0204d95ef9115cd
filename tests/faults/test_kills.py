"""kill -9 of a worker at seeded random moments in each phase of its work: nothing lost, nothing
duplicated, nothing left behind, every mailbox connected again (see tests/faults/scenario_*.py)."""
from __future__ import annotations

import pytest

from tests.faults.conftest import SEED, SIZE
from tests.faults.scenarios import BY_NAME, verdict

# A scenario runs for one to three minutes at CI size (more when it finds something: it waits out stalls).
pytestmark = pytest.mark.timeout(600 if SIZE.name == "ci" else 3600)

# The post-import move and delete are aimed by what the database shows (scenario_import.post_import): a round
# of 600 mails is committed and deleted in under a second on a quiet machine, too quick for a random wait.
SINGLE_WORKER = ["big-import", "small-batches", "body-extraction", "post-import-move", "post-import-delete",
                 "sending", "embedded-serve"]
# CI runs the single-worker scenarios on SQLite (the embedded default) and three workers on PostgreSQL; the full
# campaign (CONNECTOR_FAULTS_SIZE=full, or `python -m bench.faults`) runs every scenario on both.
DATABASES = ["sqlite", "postgresql"] if SIZE.name == "full" else ["sqlite"]


def run(campaign, name: str, database: str):
    c = campaign(database)
    scenario = BY_NAME[name]
    out = scenario.run(c)
    problems = verdict(scenario, c, out)
    assert not problems, f"{out.summary()} (seed {SEED}, size {SIZE.name}):\n" + "\n".join(problems + out.notes)
    return out


@pytest.mark.parametrize("database", DATABASES)
@pytest.mark.parametrize("name", SINGLE_WORKER)
def test_a_killed_worker_loses_and_duplicates_nothing(campaign, name, database):
    out = run(campaign, name, database)
    if name == "sending":
        assert not out.replies_twice, out.replies_twice  # the sent-folder lookup covers every kill here


def test_three_workers_take_over_a_killed_ones_mailboxes_on_postgresql(campaign):
    out = run(campaign, "three-workers", "postgresql")
    assert out.takeovers and not out.late

