"""`python -m bench.faults [--size ci|full] [--seed N] [--only SCENARIO] [--database sqlite|postgresql]`

The fault campaign (tests/faults/) as figures: kill -9 of `connector worker` processes at seeded random
moments of each phase of their work, and the servers they depend on restarted under them; then every mail
and reply is counted at the database and at the servers. Prints each scenario's outcome and, at full size
(or with --write), writes RELIABILITY.md at the repository root, with the command, machine and date.
Raw outcomes go to bench/results/faults.json. Exits non-zero if anything was lost, duplicated or stuck.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import random
import shutil
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path

from .env import ROOT, machine, percentile

RESULTS = Path(__file__).resolve().parent / "results"
MARKDOWN = ROOT / "RELIABILITY.md"


def main(argv: list[str] | None = None) -> int:
    from tests.faults.campaign import SIZES, Campaign, Databases
    from tests.faults.scenarios import SCENARIOS, verdict
    from tests.faults.world import World

    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(SIZES), default="full")
    parser.add_argument("--seed", type=int, help="picks every kill moment (default: a new one, printed)")
    parser.add_argument("--only", action="append", choices=[s.name for s in SCENARIOS],
                        help="run only this scenario (repeatable)")
    parser.add_argument("--database", action="append", choices=("sqlite", "postgresql"),
                        help="run only on this database (repeatable; default: each scenario's own list)")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                        help="write RELIABILITY.md (default: at full size, when every scenario ran)")
    parser.add_argument("--workdir", type=Path, help="keep the logs and databases here (default: removed)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    size = SIZES[args.size]
    write = (args.size == "full" and not args.only and not args.database) if args.write is None else args.write
    command = f"python -m bench.faults --size {args.size} --seed {seed}" + \
        "".join(f" --only {n}" for n in args.only or []) + "".join(f" --database {d}" for d in args.database or [])
    runs = [(s, kind) for s in SCENARIOS if not args.only or s.name in args.only
            for kind in s.databases if not args.database or kind in args.database]
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="bench-faults-", dir=args.workdir))
    started = datetime.datetime.now(datetime.timezone.utc)
    t0 = time.perf_counter()
    print(f"== fault campaign, size {size.name}, seed {seed}, in {workdir}", flush=True)
    outcomes, failures = [], []
    databases: dict[str, Databases | None] = {}
    with World(workdir / "servers") as world:
        try:
            for scenario, kind in runs:
                if kind not in databases:
                    try:
                        databases[kind] = Databases(kind)
                    except Exception as exc:  # noqa: BLE001 - e.g. PostgreSQL not installed: say so, go on
                        print(f"!! no {kind} database for the campaign: {exc!r}", flush=True)
                        failures.append(f"{kind}: no database ({exc!r}); its scenarios did not run")
                        databases[kind] = None
                if databases[kind] is None:
                    continue
                c = Campaign(world, workdir / "runs", seed=seed, size=size, databases=databases[kind],
                             log=lambda line: print(line, flush=True))
                print(f"-- {scenario.name} on {kind}", flush=True)
                try:
                    out = scenario.run(c)
                except Exception as exc:  # noqa: BLE001 - the harness failed: report it, go on with the next one
                    traceback.print_exc()
                    failures.append(f"{scenario.name} on {kind}: the harness failed: {str(exc).splitlines()[0]}")
                    continue
                finally:
                    c.close()
                problems = verdict(scenario, c, out)
                failures.extend(f"{scenario.name} on {kind}: {p}" for p in problems)
                outcomes.append((out, problems))
                print(out.summary(), flush=True)
                for line in problems + out.notes:
                    print(f"   {line}", flush=True)
        finally:
            for databases_of_kind in databases.values():
                if databases_of_kind is not None:
                    databases_of_kind.close()
    elapsed = time.perf_counter() - t0
    record = {"command": command, "seed": seed, "size": size.name, "machine": machine(),
              "date": started.strftime("%Y-%m-%d %H:%M UTC"), "elapsed_seconds": round(elapsed),
              "outcomes": [dict(dataclasses.asdict(out), problems=problems) for out, problems in outcomes],
              "failures": failures}
    lines = report(record)
    print("\n".join(lines), flush=True)
    if write:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / "faults.json").write_text(json.dumps(record, indent=2) + "\n")
        MARKDOWN.write_text("\n".join(document(record, lines)) + "\n")
        print(f"wrote {MARKDOWN}", flush=True)
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if failures else 0


def _p(values: list[float], p: float) -> str:
    return f"{percentile(values, p):.1f} s" if values else "-"


def report(record: dict) -> list[str]:
    """The figures: totals, then one row per scenario."""
    outcomes = record["outcomes"]
    kills = [k for o in outcomes for k in o["kills"]]
    resumes = [k["resume_seconds"] for k in kills if k["resume_seconds"] is not None]
    takeovers = [t for o in outcomes for t in o["takeovers"]]
    restarts = [r for o in outcomes for r in o["restarts"]]
    restart_resumes = [r["resume_seconds"] for r in restarts if r["resume_seconds"] is not None]
    twice = [(o["name"], mid, why) for o in outcomes for mid, why in o["replies_twice"].items()]
    cut = [t for t in twice if t[2].startswith("session cut:")]
    count = lambda key: sum(len(o[key]) for o in outcomes)  # noqa: E731
    lines = [
        "| figure | value |", "| --- | --- |",
        f"| kills (SIGKILL of a worker, each checked to have hit its phase) | {len(kills)} |",
        f"| server restarts (Dovecot, SMTP, IdP, PostgreSQL) | {len(restarts)} |",
        f"| mails checked (each must be exactly one article) | {sum(o['mails'] for o in outcomes)} |",
        f"| mails lost | {count('lost')} |",
        f"| mails duplicated | {count('duplicated')} |",
        f"| mails left in the wrong folder (post-import move/delete) | {count('misplaced')} |",
        f"| replies checked (each must be accepted by the SMTP server and end \"sent\") | "
        f"{sum(o['replies'] for o in outcomes)} |",
        f"| replies lost | {count('replies_lost')} |",
        f"| replies the SMTP server accepted twice | {len(twice)} ({len(cut)} after the session broke between the "
        f"server taking DATA and its 250, which the sent-folder lookup must settle; {len(twice) - len(cut)} "
        f"other) |",
        f"| mailboxes left needing a person (not \"connected\" at the end) | {count('stuck')} |",
        f"| time to resume after a kill (until the work moved on again) | p50 {_p(resumes, 50)}, "
        f"p95 {_p(resumes, 95)}, max {max(resumes):.1f} s |" if resumes else "| time to resume after a kill | - |",
        f"| takeover of a killed worker's mailboxes by the others (three workers) | p50 {_p(takeovers, 50)}, "
        f"p95 {_p(takeovers, 95)} |",
        f"| everything done again after a server restart | p50 {_p(restart_resumes, 50)}, "
        f"p95 {_p(restart_resumes, 95)} |",
        "",
        "| scenario | database | workers | kills | mails | lost | dup. | misplaced | replies | twice | stuck | "
        "resume p50 / p95 | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for o in outcomes:
        r = [k["resume_seconds"] for k in o["kills"] if k["resume_seconds"] is not None] or \
            [x["resume_seconds"] for x in o["restarts"] if x["resume_seconds"] is not None]
        lines.append(f"| {o['title']} | {o['database']} | {o['workers']} | {len(o['kills']) or len(o['restarts'])}"
                     f"{'' if o['kills'] else ' restarts'} | {o['mails']} | {len(o['lost'])} | "
                     f"{len(o['duplicated'])} | {len(o['misplaced'])} | {o['replies']} | {len(o['replies_twice'])} | "
                     f"{len(o['stuck'])} | {_p(r, 50)} / {_p(r, 95)} | {o['seconds']:.0f} |")
    return lines


def findings(record: dict) -> list[str]:
    """Everything the campaign found wrong, first: a reader must not have to search the tables for it."""
    lines = [f"- {o['title']} ({o['database']}, {o['workers']} worker{'s' if o['workers'] > 1 else ''}): {p}"
             for o in record["outcomes"] for p in o["problems"]]
    lines += [f"- {failure}" for failure in record["failures"]
              if "the harness failed" in failure or "no database" in failure]
    if not lines:
        return ["Nothing was lost, duplicated, misplaced or left stuck.", ""]
    return ["## What the campaign found", "", *lines, ""]


def document(record: dict, figures: list[str]) -> list[str]:
    """RELIABILITY.md: what is claimed, how it is checked, the figures, and every finding."""
    outcomes = record["outcomes"]
    out = [
        "# Reliability",
        "",
        "Generated by `python -m bench.faults` (the fault campaign of `tests/faults/`, at full size); do not edit.",
        "",
        "The claim: **a `connector worker` killed with SIGKILL at any moment loses no mail and no reply, and "
        "duplicates neither; Dovecot, the SMTP server, the identity provider and PostgreSQL can restart under it; "
        "and all of it resumes without a person.** The campaign checks the claim from the outside: it runs the "
        "real `connector serve --no-worker` and `connector worker` processes against the real Dovecot, the SMTP "
        "test server (`tests/servers/smtp.py`, which files every accepted mail in Sent Items as Exchange does) and "
        "the test identity provider (single-use refresh tokens), sets everything up through the product's own "
        "CLI, pages and REST API, kills and restarts, and reads the database back only to count articles by "
        "Message-ID and outbox states.",
        "",
        f"Measured {record['date']} with `{record['command']}` ({record['elapsed_seconds'] / 60:.0f} min) on "
        f"{record['machine']}.",
        "",
        *figures,
        "",
        *findings(record),
        "## How each fault is made and checked",
        "",
        "- **Kills are aimed and proven.** Each kill targets one phase; its moment is a seeded random point in "
        "the work left (articles committed, bodies extracted, mails gone from INBOX, replies sent) plus a seeded "
        "random delay. A kill counts only if the phase's progress moved during that worker's life before the "
        "kill and was still short of the end once the process was dead; otherwise it is reported as missed "
        "(the scenario then gives the phase more mail, twice as much after a round no kill landed in, and aims "
        "again). The whole process group is killed "
        "(the parser pool too), like a machine losing power under it.",
        "- **Big import**: the default fetch batch (200 mails), 20% of the mails with a 20-120 KB attachment, so "
        "each batch is parsed headers first and its raw mail written to pack files (SQLite) while the next is "
        "fetched. **Small batches**: bursts of 2-10 mails over LMTP; a kill counts only if delivered mail was "
        "not yet imported. **Body extraction**: killed after the import, while bodies are extracted from the "
        "stored raw mail. **Post-import move/delete**: progress counts commits and mails gone from INBOX, so a "
        "kill between a batch's commit and its move is a kill in the phase. A round of mail is committed and "
        "moved in under a second on a quiet machine, too quick for a random delay: these kills are aimed by what "
        "the database shows (committed mail whose action has not run yet, `accounts.last_uid` past "
        "`post_import_done_uid`) and made the moment it is seen; the counts above prove the hit.",
        "- **Sending**: the SMTP server calls the campaign when it has taken a reply's DATA (delivered and filed "
        "in Sent Items), before it writes the 250; the campaign kills the worker right there and checks that the "
        "reply is still \"sending\" in the database. Its only defence is the sent-folder lookup for replies left "
        "\"sending\": by a crash, or by a connection that broke after the reply was handed over (the worker "
        "never sends such a reply again by itself). Other kills come at random moments while a wave of replies "
        "goes out.",
        "- **Three workers** (PostgreSQL): the victim is a worker holding at least one mailbox's lease (read from "
        "the database just before the kill); the others must hold its mailboxes within `lease_seconds` plus one "
        "scheduler tick, and a probe mail in each must become an article.",
        "- **Server restarts**: each server is stopped for 2 s while mail and replies flow; the SMTP server also "
        "once right after taking a reply's DATA and before its 250. Access tokens live 330 s, so the workers "
        "refresh them every 30 s and the identity provider's restart meets refreshes. After each restart the "
        "campaign waits until every mail is imported, every reply sent and every mailbox \"connected\". A reply "
        "the SMTP server took twice is a finding, the restart under a held 250 included: the worker must leave "
        "that reply to the sent-folder lookup.",
        "- A worker restarts at once after its kill (as systemd would); the time to resume runs from the kill until "
        "the phase's progress moves again, and includes waiting out the dead worker's lease.",
        "",
        "## Scenarios and findings",
        "",
    ]
    for o in outcomes:
        out.append(f"### {o['title']} ({o['database']}, {o['workers']} worker{'s' if o['workers'] > 1 else ''})")
        out.append("")
        out.append(f"Settings: {o['settings']}. {len(o['kills'])} kills, {len(o['restarts'])} restarts, "
                   f"{o['mails']} mails, {o['replies']} replies, {o['seconds']:.0f} s.")
        out.append("")
        if o["problems"]:
            out.append("**Found:**")
            out.append("")
            out.extend(f"- {p}" for p in o["problems"])
            out.append("")
        else:
            out.append("Nothing lost, duplicated, misplaced or stuck.")
            out.append("")
        for mid, why in o["replies_twice"].items():
            out.append(f"- Reply `{mid}` accepted twice: {why}.")
        notes = o["notes"] + ([f"{o['not_made']} planned kills were not made: the phase ended during the random "
                               "delay"] if o["not_made"] else [])
        out.extend(f"- {note}" for note in notes)
        if o["restarts"]:
            out.append("- Restarts: " + ", ".join(
                f"{r['server']} ({r['resume_seconds']} s)" if r["resume_seconds"] is not None else
                f"{r['server']} (did not settle)" for r in o["restarts"]))
        if o["kills"]:
            out.append("")
            out.append("<details><summary>Every kill</summary>")
            out.append("")
            out.extend(f"{n}. {k['detail']}; " + (f"resumed after {k['resume_seconds']:.1f} s" if k["resume_seconds"]
                                                 is not None else "**never resumed**")
                       for n, k in enumerate(o["kills"], 1))
            out.append("")
            out.append("</details>")
        out.append("")
    return out


if __name__ == "__main__":
    sys.exit(main())
