"""`python -m bench [--only import|latency|mailboxes|pages] [--size tiny|full] [--database sqlite|postgresql]`

Runs the benchmarks (each starts its own Dovecot and test identity provider, and with
`--database postgresql` its own durable PostgreSQL cluster: bench/database.py), prints the figures,
and at full size writes them into BENCHMARKS.md (the section of each benchmark and database that
ran, with the command, the machine and the date; the other sections are kept). Raw results also go
to bench/results/<name>.json (<name>-postgresql.json on PostgreSQL).
"""
from __future__ import annotations

import argparse
import datetime
import json
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from . import BENCHES
from .database import BACKENDS, describe
from .env import ROOT, machine

RESULTS = Path(__file__).resolve().parent / "results"
MARKDOWN = ROOT / "BENCHMARKS.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=list(BENCHES), action="append",
                        help="run only this benchmark (repeatable); default: all four")
    parser.add_argument("--size", choices=("tiny", "full"), default="full")
    parser.add_argument("--database", choices=BACKENDS, default="sqlite",
                        help="the connector's database: the embedded SQLite file (default) or a private PostgreSQL "
                             "cluster with production durability (fsync, synchronous_commit, full_page_writes on)")
    parser.add_argument("--mailboxes", type=int, metavar="N",
                        help="mailboxes benchmark: this many mailboxes (default: 1,000 on SQLite, 3,000 on PostgreSQL "
                             "at full size)")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="mailboxes benchmark: this many `connector worker` processes (default: 1 on SQLite, 3 on "
                             "PostgreSQL)")
    parser.add_argument("--minutes", type=float, metavar="M",
                        help="mailboxes benchmark: minutes of steady state (default: 10 at full size)")
    parser.add_argument("--mails", type=int, metavar="N",
                        help="import benchmark: this many mails a mailbox (default: 10,000 at full size); a smaller "
                             "number is for trying a change quickly")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                        help="write BENCHMARKS.md (default: at full size only)")
    parser.add_argument("--workdir", type=Path, help="keep the servers' files here (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the servers and subprocesses a benchmark started are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    write = (args.size == "full" and args.mails is None) if args.write is None else args.write
    names = args.only or list(BENCHES)
    options = {key: value for key in ("mailboxes", "workers", "minutes")
               if (value := getattr(args, key)) is not None}
    if options and "mailboxes" not in names:
        parser.error("--mailboxes, --workers and --minutes are options of the mailboxes benchmark")
    if any(value <= 0 for value in options.values()):
        parser.error("--mailboxes, --workers and --minutes must be positive")
    if args.mails is not None and ("import" not in names or args.mails <= 0):
        parser.error("--mails is a positive number of mails for the import benchmark")
    import_options = {"mails": args.mails} if args.mails is not None else {}
    command = "python -m bench" + "".join(f" --only {n}" for n in (args.only or [])) + \
        (f" --size {args.size}" if args.size != "full" else "") + \
        (f" --database {args.database}" if args.database != "sqlite" else "") + \
        "".join(f" --{key} {value:g}" for key, value in {**options, **import_options}.items())
    failed = False
    for name in names:
        module = BENCHES[name]
        if args.workdir:
            args.workdir.mkdir(parents=True, exist_ok=True)
        workdir = Path(tempfile.mkdtemp(prefix=f"bench-{name}-", dir=args.workdir)) if args.workdir else \
            Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
        started = datetime.datetime.now(datetime.timezone.utc)
        print(f"== {name} ({args.size}, {args.database}) in {workdir}", flush=True)
        t0 = time.perf_counter()
        try:
            result = module.run(workdir, args.size, log=lambda s: print(s, flush=True), database=args.database,
                                **(options if name == "mailboxes" else import_options if name == "import" else {}))
        except Exception:  # noqa: BLE001 - report, keep the work dir, go on with the next benchmark
            traceback.print_exc()
            print(f"!! {name} failed; files kept in {workdir}", flush=True)
            failed = True
            continue
        elapsed = time.perf_counter() - t0
        record = {"name": name, "size": args.size, "database": args.database, "command": command,
                  "machine": machine(describe(result.get("postgresql"))),
                  "date": started.strftime("%Y-%m-%d %H:%M UTC"), "elapsed_seconds": round(elapsed, 1),
                  "result": result}
        lines = module.report(result)
        print("\n".join(lines), flush=True)
        if write:
            RESULTS.mkdir(exist_ok=True)
            key = name if args.database == "sqlite" else f"{name}-{args.database}"
            (RESULTS / f"{key}.json").write_text(json.dumps(record, indent=2) + "\n")
            write_section(key, record, lines)
        if not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failed else 0


def write_section(name: str, record: dict, lines: list[str]) -> None:
    """Replace the figures between this benchmark's markers in BENCHMARKS.md (`bench:import:start`, and
    `bench:import-postgresql:start` for its PostgreSQL run)."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    body = "\n".join([start,
                      f"Measured {record['date']} with `{record['command']}` ({record['elapsed_seconds']} s) on "
                      f"{record['machine']}.", "", *lines, end])
    text = MARKDOWN.read_text() if MARKDOWN.exists() else "# Benchmarks\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        text = before + body + after
    else:
        text = text.rstrip("\n") + f"\n\n## {name}\n\n{body}\n"
    MARKDOWN.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
