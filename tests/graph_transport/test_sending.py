"""Sending over Graph: MIME as it is, Sent Items, shared mailboxes, exactly once after a lost answer."""
from __future__ import annotations

import time
from email import message_from_bytes, policy

import pytest

from connector.mail.graph import GraphError
from tests.support.graph import MAIL_SCOPES
from tests.support.mail import make_mail

pytestmark = pytest.mark.filterwarnings("ignore:response_mode:UserWarning")


def reply_from(sender: str, message_id: str = "<reply-1@helpdesk.test>") -> bytes:
    return make_mail(to="customer@example.org", sender=sender, subject="Re: Printer [#10042]",
                     message_id=message_id, in_reply_to="<question@example.org>",
                     references="<first@example.org> <question@example.org>",
                     headers={"X-Connector-Ticket": "10042"})


def send_requests(graph, address: str):
    return [r for r in graph.requests_for(address) if r.method == "POST" and r.path.endswith("/sendMail")]


def test_sent_mime_keeps_threading_headers_and_lands_in_sent_items(graph, mailbox, alice) -> None:
    raw = reply_from(alice)
    mailbox.send_mime(raw)
    assert graph.sent(alice) == [raw]  # byte for byte: nothing rebuilt from JSON
    [copy] = graph.messages(alice, "sentitems")
    headers = message_from_bytes(copy.raw, policy=policy.default)
    assert headers["Message-ID"] == "<reply-1@helpdesk.test>"
    assert headers["In-Reply-To"] == "<question@example.org>"
    assert headers["References"] == "<first@example.org> <question@example.org>"
    assert headers["Subject"] == "Re: Printer [#10042]" and headers["X-Connector-Ticket"] == "10042"
    [request] = send_requests(graph, alice)
    assert request.status == 202
    assert mailbox.find_sent("<reply-1@helpdesk.test>") and mailbox.find_sent("reply-1@helpdesk.test")
    assert not mailbox.find_sent("<never-sent@helpdesk.test>")


def test_a_message_id_with_quotes_is_looked_up_exactly(graph, mailbox, alice) -> None:
    tricky = "<o'brien+1&x=y'@helpdesk.test>"
    mailbox.send_mime(reply_from(alice, tricky))
    mailbox.send_mime(reply_from(alice, "<o'brien+1&x=y'@helpdesk.test.evil>"))
    assert mailbox.find_sent(tricky)
    assert not mailbox.find_sent("<o'brien+1&x=y@helpdesk.test>")
    with pytest.raises(ValueError):
        mailbox.find_sent("<a@b>\r\nBcc: x@y")


def test_a_lost_answer_is_settled_by_the_sent_items_lookup(graph, mailbox, alice) -> None:
    raw = reply_from(alice, "<once@helpdesk.test>")
    graph.fail_next(status=504, method="POST", path="/sendMail", after=True)
    with pytest.raises(GraphError) as lost:
        mailbox.send_mime(raw)
    assert lost.value.status == 504 and not lost.value.permanent  # the outbox will look, then decide
    assert graph.sent(alice) == [raw]  # it went out; only the 202 was lost
    assert len(send_requests(graph, alice)) == 1  # never sent again on its own
    assert mailbox.find_sent("<once@helpdesk.test>")  # so the outbox marks it sent: no second mail
    graph.fail_next(status=503, method="POST", path="/sendMail")  # refused before sending
    with pytest.raises(GraphError):
        mailbox.send_mime(reply_from(alice, "<twice@helpdesk.test>"))
    assert not mailbox.find_sent("<twice@helpdesk.test>")  # so the outbox sends it again later


def test_a_lost_answer_not_yet_in_sent_items_is_left_to_the_lookup_after_the_lease(graph, mailbox, alice) -> None:
    """Exchange may file the copy later than the submitter looks: such a mail is `maybe_sent` (the outbox
    leaves it "sending" for recovery.py's lookup after the lease), never a transient failure to send again.
    A 503 (the service did not take the request) not found in Sent Items is an ordinary transient failure."""
    from connector.mail.smtp import SendFailure
    from connector.transport.graph import GraphSubmitter

    submitter = GraphSubmitter(mailbox, sleep=lambda seconds: None)
    graph.fail_next(status=504, method="POST", path="/sendMail")  # no answer, and no copy filed yet
    with pytest.raises(SendFailure) as lost:
        submitter.send(alice, ["customer@example.org"], reply_from(alice, "<late@helpdesk.test>"))
    assert lost.value.maybe_sent and not lost.value.permanent
    assert "not sent again until Sent Items has been checked" in lost.value.message
    graph.fail_next(status=503, method="POST", path="/sendMail")
    with pytest.raises(SendFailure) as refused:
        submitter.send(alice, ["customer@example.org"], reply_from(alice, "<refused@helpdesk.test>"))
    assert not refused.value.maybe_sent and not refused.value.permanent
    graph.fail_next(status=504, method="POST", path="/sendMail", after=True)  # sent; only the answer lost
    assert "found in Sent Items" in submitter.send(alice, ["customer@example.org"],
                                                   reply_from(alice, "<found@helpdesk.test>"))
    assert [r.count(b"<found@helpdesk.test>") for r in graph.sent(alice)] == [1]


def test_a_network_error_during_send_is_not_retried(graph, mailbox, alice) -> None:
    graph.delay(alice, 1.0)
    mailbox.http.timeout = (5.0, 0.3)  # the answer takes longer than we wait
    raw = reply_from(alice, "<slow@helpdesk.test>")
    with pytest.raises(GraphError) as timed_out:
        mailbox.send_mime(raw)
    assert timed_out.value.code == "Unreachable" and timed_out.value.retry_after
    # every request the client made was sent before send_mime gave up; let the server finish them
    deadline = time.monotonic() + 15
    while sum(graph.limits.inflight.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    graph.delay(alice, 0)
    mailbox.http.timeout = (5.0, 30.0)
    assert graph.sent(alice) == [raw]  # sent once (the work is done before a request leaves the gate)
    assert mailbox.find_sent("<slow@helpdesk.test>")


def test_a_shared_mailbox_sends_with_send_as_only(graph, open_mailbox, shared_setup, graph_org) -> None:
    delegate, shared, token = shared_setup
    graph_org.idp.grant_mailbox_access(delegate, shared)
    mailbox = open_mailbox(shared, token, shared=True, user=delegate)
    raw = reply_from(shared)
    with pytest.raises(GraphError) as denied:
        mailbox.send_mime(raw)
    assert denied.value.code == "ErrorSendAsDenied" and denied.value.permanent
    assert denied.value.message == (
        f"{delegate} may not send as {shared} (ErrorSendAsDenied): an Exchange admin grants it with "
        f"Add-RecipientPermission -Identity {shared} -Trustee {delegate} -AccessRights SendAs, then Retry.")
    graph.grant_send_as(delegate, shared)
    mailbox.send_mime(raw)
    assert graph.sent(shared) == [raw] and graph.sent(delegate) == []
    assert [m.raw for m in graph.messages(shared, "sentitems")] == [raw]
    assert mailbox.find_sent("<reply-1@helpdesk.test>")
    assert send_requests(graph, shared)[-1].path == f"/v1.0/users/{shared}/sendMail"


def test_own_scopes_do_not_reach_a_shared_mailbox(graph, open_mailbox, graph_org) -> None:
    delegate = graph_org.add_user("narrow")
    shared = f"desk@{graph_org.domain}"
    graph.mailbox(shared)
    graph_org.idp.grant_mailbox_access(delegate, shared)
    graph.grant_send_as(delegate, shared)
    mailbox = open_mailbox(shared, graph_org.token_source(delegate, MAIL_SCOPES), shared=True, user=delegate)
    for action in (lambda: mailbox.folder_id("inbox"), lambda: mailbox.send_mime(reply_from(shared))):
        with pytest.raises(GraphError) as refused:
            action()
        assert refused.value.reconnect and refused.value.permanent
        assert f"lacks the Microsoft Graph permission Mail." in refused.value.message
    assert "Mail.Send.Shared" in refused.value.message and "reconnect the mailbox" in refused.value.message


def test_too_large_for_sendmail_is_refused_before_sending(graph, mailbox, alice) -> None:
    big = make_mail(to="x@example.org", sender=alice, body="x" * (3_200_000))
    with pytest.raises(GraphError) as refused:
        mailbox.send_mime(big)
    assert refused.value.permanent and refused.value.code == "RequestEntityTooLarge"
    assert "at most 4 MB per request" in refused.value.message and "IMAP and SMTP" in refused.value.message
    assert send_requests(graph, None) == [] and graph.sent(alice) == []  # not even tried
    fits = make_mail(to="x@example.org", sender=alice, body="y" * 2_900_000)
    mailbox.send_mime(fits)
    assert graph.sent(alice) == [fits]
