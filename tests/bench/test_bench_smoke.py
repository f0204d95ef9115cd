"""Each benchmark at its tiny size, on SQLite and on PostgreSQL (`--database postgresql`), so the
benchmarks cannot rot. Targets are not asserted here (that is what `python -m bench` and
BENCHMARKS.md are for); only that each run produces its figures, on the database it says."""
from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from bench import BENCHES
from tests.conftest import require


def _dovecot():
    from tests.servers.dovecot import dovecot_available

    require(dovecot_available(), "Dovecot is not installed (apt-get install dovecot-imapd dovecot-lmtpd)")


def _corpus():
    from bench.importing import CORPUS

    require(any(CORPUS.glob("*.box")), f"the mail corpus is not at {CORPUS} (it lives in ../shared/corpus/)")


DATABASES = pytest.mark.parametrize("database", ["sqlite", "postgresql"])


def _database(database: str) -> None:
    if database == "postgresql":
        from tests.support import postgres as pg

        require(pg.available(), "PostgreSQL is not installed (apt-get install postgresql), "
                                f"and {pg.ENV_URL} is not set")


def _on(r: dict, database: str) -> None:
    """The run used the database asked for; a PostgreSQL run was durable, as production is."""
    assert r["database"] == database
    if database == "sqlite":
        assert r["postgresql"] is None
    elif not os.environ.get("CONNECTOR_TEST_DATABASE_URL"):  # a given server keeps its own settings
        settings = r["postgresql"]
        assert (settings["fsync"], settings["synchronous_commit"], settings["full_page_writes"]) == ("on", "on", "on")
        assert settings["server_version"]


def _figures(name: str, tmp_path, database: str = "sqlite") -> dict:
    # Not under pytest's basetemp (tmp_path is unused): as root, Dovecot's mail processes run as "dovecot"
    # and must traverse the path, and another pytest run resets /tmp/pytest-of-<user> to 0700.
    module = BENCHES[name]
    workdir = Path(tempfile.mkdtemp(prefix=f"connector-bench-{name}-"))
    try:
        result = module.run(workdir, "tiny", log=lambda _line: None, database=database)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    lines = module.report(result)
    assert lines and all(isinstance(line, str) for line in lines)
    _on(result, database)
    return result


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value)


@DATABASES
def test_import_benchmark_produces_figures(tmp_path, database):
    _dovecot()
    _corpus()
    _database(database)
    r = _figures("import", tmp_path, database)
    assert r["exit_code"] == 0 and r["articles"] == r["messages"] and r["failures"] == 0
    assert r["all_articles"] == [r["messages"]] * 2 and len(r["import_runs"]) == 2
    assert r["bodies_pending"] == 0 and r["attachments"] > 0  # the tiny mailbox is one backlog: extracted after
    assert r["tickets_seconds"] <= r["import_seconds"]
    assert all(_number(r[k]) and r[k] > 0 for k in ("raw_seconds", "tickets_seconds", "tickets_ratio", "import_seconds",
                                                    "ratio", "peak_rss_mb"))


@DATABASES
def test_latency_benchmark_produces_figures(tmp_path, database):
    _dovecot()
    _database(database)
    r = _figures("latency", tmp_path, database)
    assert r["seen"] == r["mails"] and r["complete"]
    assert all(_number(r[k]) and r[k] > 0 for k in ("p50_s", "p95_s", "max_s", "ref_p95_s"))


@DATABASES
def test_mailboxes_benchmark_produces_figures(tmp_path, database):
    _dovecot()
    _database(database)
    r = _figures("mailboxes", tmp_path, database)
    assert r["seen"] == r["mails"] > 0 and r["not_connected_at_end"] == 0
    assert all(_number(r[k]) for k in ("first_sync_seconds", "p95_s", "rss_max_mb", "rss_peak_mb", "cpu_share",
                                        "token_calls_per_mailbox_hour"))
    assert r["workers"] == (3 if database == "postgresql" else 1) == len(r["per_worker"])
    # every mailbox held by exactly one of the measured workers, each worker's own figures present
    assert sum(w["held_end"] for w in r["per_worker"]) == r["mailboxes"]
    assert all(w["id"] and _number(w["rss_peak_mb"]) and _number(w["cpu_share"]) for w in r["per_worker"])
    # the paged Mailboxes page timed at size, and the workers' own account of each new mail (news to commit)
    assert sorted(r["page_ms"]) == ["first_page", "last_page", "search"] and all(map(_number, r["page_ms"].values()))
    inside = r["inside_worker"]
    assert 0 < inside["passes"] <= r["mails"] and inside["max_s"] <= r["max_s"], inside
    assert r["dovecot_processes_without_push"] == 0


@DATABASES
def test_pages_benchmark_produces_figures(tmp_path, database):
    _corpus()
    _database(database)
    r = _figures("pages", tmp_path, database)
    assert r["tickets"] > 0 and r["articles"] >= r["tickets"]
    assert r["common_items"] > 0 and r["list_items"] > 0
    assert all(_number(f["p95_ms"]) and f["p95_ms"] > 0 for f in r["figures"].values())
