"""The embedded default killed: `connector serve` (the web app and the worker in one process) gets SIGKILL at
seeded random moments while customers write in and agents answer through its REST API (which is down until
it is restarted; the agents press Send again). A kill counts when the process had moved the work on during
its life and work was waiting (mail not yet imported, or replies not yet sent) when it died."""
from __future__ import annotations

import time

from tests.faults.campaign import Campaign
from tests.faults.checks import check_articles, check_connected, check_replies
from tests.faults.harness import Events, Kill, Outcome, ScenarioFailed, settles, wait_for, wait_for_progress
from tests.faults.installation import Tuning
from tests.faults.mails import make_mails, put_in_maildir
from tests.faults.observe import Observer
from tests.faults.traffic import Traffic

MAILBOXES = 2
STALL = 60.0


def embedded(c: Campaign) -> Outcome:
    name, size = "embedded-serve", c.size
    rng = c.rng(name)
    started = time.monotonic()
    out = Outcome(name, c.databases.kind, 1, "connector serve (web and embedded worker) killed while it works")
    out.settings = "lease_seconds 3, sending_lease_seconds 5, mail and replies through its own API meanwhile"
    installation = c.install(name, Tuning(lease_seconds=3, sending_lease_seconds=5))
    observer = Observer(installation.database_url)
    events = Events()
    traffic = None
    try:
        tag = c.tag(name)
        mailboxes, first = {}, {}
        for i in range(MAILBOXES):
            address = c.world.add_mailbox(f"{tag}m{i}")
            account = installation.connect(address)
            mailboxes[account] = address
            first[account] = make_mails(rng, f"{tag}.first{account}", 5, to=address, attachment_share=0)
            put_in_maildir(c.world.dovecot, address, first[account])
        installation.web.terminate()
        serve = installation.start_web(embedded_worker=True)
        wait_for(lambda: all(observer.incoming(a) >= len(first[a]) for a in mailboxes), 120,
                 "the first mails imported", watch=[serve])
        imported = lambda: sum(observer.incoming(a) for a in mailboxes)  # noqa: E731
        progress = lambda: imported() + observer.sent()  # noqa: E731
        waiting = lambda: (sum(len(first[a]) + len(traffic.mails[a]) for a in mailboxes) > imported()  # noqa: E731
                           or any(state != "sent" for state in observer.outbox().values()))
        traffic = Traffic(c.world, installation, rng, tag, mailboxes, mail_gap=(0.05, 0.3), reply_every=2)
        traffic.start()
        traffic.resume()
        born = progress()
        attempts = 0
        while len(out.kills) < size.trickle_kills:
            attempts += 1
            if attempts > 4 * size.trickle_kills:
                raise ScenarioFailed(f"only {len(out.kills)} of {size.trickle_kills} kills found work under way")
            wait_for_progress(progress, born + rng.randint(1, 6), "serve working", stall=STALL, watch=[serve],
                              extra=waiting)
            time.sleep(rng.uniform(0, 0.2))
            before, pending = progress(), waiting()
            if not pending:
                out.not_made += 1
                continue
            moment = serve.kill()
            after = progress()
            events.add("connector serve killed", moment)
            kill = Kill(out.name, "serving", f"{imported()} mails imported, {observer.sent()} replies sent, work "
                                             "waiting", before, after, after + 1)
            out.kills.append(kill)
            serve = installation.start_web(embedded_worker=True)
            born = progress()
            wait_for_progress(progress, after + 1, "serve resuming after a kill", stall=STALL, watch=[serve])
            kill.resume_seconds = time.monotonic() - moment
            c.log(f"  kill {len(out.kills)}: {kill.detail}; resumed after {kill.resume_seconds:.1f} s")
        traffic.stop()
        if traffic.error is not None:
            raise ScenarioFailed(f"the traffic failed: {traffic.error!r}")
        expected = {a: first[a] + traffic.mails[a] for a in mailboxes}
        settles(lambda: all(observer.incoming(a) >= len(expected[a]) for a in mailboxes)
                and all(state == "sent" for state in observer.outbox().values()), size.settle_seconds,
                state=lambda: (progress(),))
        for account in mailboxes:
            check_articles(out, observer, account, expected[account], bodies=False)
        reply_ids = list(observer.outbox())
        check_replies(out, c.world, observer, reply_ids, events.explain_twice(
            c.world.submissions, reply_ids, why=lambda mid, faults: f"accepted again after: {faults}"))
        check_connected(out, installation)
    finally:
        if traffic is not None:
            traffic.stop()
        observer.close()
        installation.stop()
        out.seconds = time.monotonic() - started
    return out
