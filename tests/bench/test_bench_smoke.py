"""Each benchmark at its tiny size, so the benchmarks cannot rot. Targets are not asserted here
(that is what `python -m bench` and BENCHMARKS.md are for); only that each run produces its figures."""
from __future__ import annotations

import math
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


def _figures(name: str, tmp_path) -> dict:
    # Not under pytest's basetemp (tmp_path is unused): as root, Dovecot's mail processes run as "dovecot"
    # and must traverse the path, and another pytest run resets /tmp/pytest-of-<user> to 0700.
    module = BENCHES[name]
    workdir = Path(tempfile.mkdtemp(prefix=f"connector-bench-{name}-"))
    try:
        result = module.run(workdir, "tiny", log=lambda _line: None)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    lines = module.report(result)
    assert lines and all(isinstance(line, str) for line in lines)
    return result


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value)


def test_import_benchmark_produces_figures(tmp_path):
    _dovecot()
    _corpus()
    r = _figures("import", tmp_path)
    assert r["exit_code"] == 0 and r["articles"] == r["messages"] and r["failures"] == 0
    assert r["all_articles"] == [r["messages"]] * 2 and len(r["import_runs"]) == 2
    assert r["bodies_pending"] == 0 and r["attachments"] > 0  # the tiny mailbox is one backlog: extracted after
    assert r["tickets_seconds"] <= r["import_seconds"]
    assert all(_number(r[k]) and r[k] > 0 for k in ("raw_seconds", "tickets_seconds", "tickets_ratio", "import_seconds",
                                                    "ratio", "peak_rss_mb"))


def test_latency_benchmark_produces_figures(tmp_path):
    _dovecot()
    r = _figures("latency", tmp_path)
    assert r["seen"] == r["mails"] and r["complete"]
    assert all(_number(r[k]) and r[k] > 0 for k in ("p50_s", "p95_s", "max_s", "ref_p95_s"))


def test_mailboxes_benchmark_produces_figures(tmp_path):
    _dovecot()
    r = _figures("mailboxes", tmp_path)
    assert r["seen"] == r["mails"] > 0 and r["not_connected_at_end"] == 0
    assert all(_number(r[k]) for k in ("first_sync_seconds", "p95_s", "rss_max_mb", "cpu_share",
                                        "token_calls_per_mailbox_hour"))


@pytest.mark.parametrize("name", ["pages"])
def test_pages_benchmark_produces_figures(tmp_path, name):
    _corpus()
    r = _figures(name, tmp_path)
    assert r["tickets"] > 0 and r["articles"] >= r["tickets"]
    assert all(_number(f["p95_ms"]) and f["p95_ms"] > 0 for f in r["figures"].values())
