"""The fault campaign's fixtures: one set of restartable servers for the package, and a campaign (seed,
size, database) per database kind.

`CONNECTOR_FAULTS_SEED` (default 1) picks the kill moments; `CONNECTOR_FAULTS_SIZE=full` runs the full
campaign (about half an hour; `python -m bench.faults` runs it too and writes RELIABILITY.md).
"""
from __future__ import annotations

import os

import pytest

from tests.conftest import require
from tests.faults.campaign import SIZES, Campaign, Databases
from tests.faults.world import World

SEED = int(os.environ.get("CONNECTOR_FAULTS_SEED", "1"))
SIZE = SIZES[os.environ.get("CONNECTOR_FAULTS_SIZE", "ci")]


def postgres_support():
    try:
        from tests.support import postgres
    except ImportError:  # the PostgreSQL test support is not on this branch
        pytest.skip("tests/support/postgres.py (the PostgreSQL test support) is not on this branch yet")
    return postgres


@pytest.fixture(scope="package")
def world():
    from tests.servers.dovecot import dovecot_available

    require(dovecot_available(), "Dovecot is not installed (apt-get install dovecot-imapd dovecot-lmtpd)")
    with World() as servers:
        yield servers


@pytest.fixture(scope="package")
def postgresql_databases():
    require(postgres_support().available(), "PostgreSQL is not installed (apt-get install postgresql)")
    databases = Databases("postgresql")
    yield databases
    databases.close()


@pytest.fixture(scope="package")
def sqlite_databases():
    return Databases("sqlite")


@pytest.fixture
def campaign(request, world, tmp_path):
    """campaign("sqlite" | "postgresql") -> a Campaign with the package's servers, seed and size."""
    made = []

    def make(kind: str = "sqlite") -> Campaign:
        databases = request.getfixturevalue(f"{kind}_databases")
        c = Campaign(world, tmp_path, seed=SEED, size=SIZE, databases=databases,
                     log=lambda line: print(line, flush=True))
        made.append(c)
        return c
    yield make
    for c in made:
        c.close()
