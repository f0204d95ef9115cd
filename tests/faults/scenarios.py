"""The campaign's scenarios, for the tests (tests/faults/test_*.py) and the report (`python -m bench.faults`)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tests.faults.campaign import Campaign
from tests.faults.harness import Outcome
from tests.faults.scenario_cluster import three_workers
from tests.faults.scenario_embedded import embedded
from tests.faults.scenario_import import big_import, bodies, post_import, trickle
from tests.faults.scenario_restart import server_restarts
from tests.faults.scenario_send import sending


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[[Campaign], Outcome]
    databases: tuple[str, ...]  # where it runs in a full campaign
    planned_kills: Callable[[Campaign], int]  # how many kills must hit their phase


SCENARIOS = [
    Scenario("big-import", big_import, ("sqlite", "postgresql"), lambda c: c.size.big_import_kills),
    Scenario("small-batches", trickle, ("sqlite", "postgresql"), lambda c: c.size.trickle_kills),
    Scenario("body-extraction", bodies, ("sqlite", "postgresql"), lambda c: c.size.bodies_kills),
    Scenario("post-import-move", lambda c: post_import(c, "move"), ("sqlite", "postgresql"),
             lambda c: c.size.move_kills),
    Scenario("post-import-delete", lambda c: post_import(c, "delete"), ("sqlite", "postgresql"),
             lambda c: c.size.move_kills),
    Scenario("sending", sending, ("sqlite", "postgresql"),
             lambda c: c.size.sending_data_kills + c.size.sending_random_kills),
    Scenario("embedded-serve", embedded, ("sqlite", "postgresql"), lambda c: c.size.trickle_kills),
    Scenario("three-workers", three_workers, ("postgresql",), lambda c: c.size.cluster_kills),
    Scenario("server-restarts", lambda c: server_restarts(c, workers=1), ("sqlite",), lambda c: 0),
    Scenario("server-restarts-3w", lambda c: server_restarts(c, workers=3), ("postgresql",), lambda c: 0),
]
BY_NAME = {s.name: s for s in SCENARIOS}


def verdict(scenario: Scenario, c: Campaign, out: Outcome) -> list[str]:
    """Everything wrong with an outcome: what the product lost, duplicated or left stuck, and kills that did
    not hit the phase they aimed at (then the scenario proved less than it claims)."""
    problems = list(out.problems())
    planned = scenario.planned_kills(c)
    if len(out.kills) < planned and not any(note.endswith("no more kills") for note in out.notes):
        problems.append(f"only {len(out.kills)} of {planned} kills hit the phase")
    unresumed = [k.detail for k in out.kills if k.resume_seconds is None]
    if unresumed:
        problems.append(f"{len(unresumed)} kills after which the work never resumed: {unresumed[0]}")
    return problems
