"""Every Graph error a mailbox meets, as the stand-in answers it, becomes a sentence with the fix."""
from __future__ import annotations

import pytest

from connector.mail.graph import GraphError
from tests.graph.model import new_immutable_id
from tests.support.graph import GRAPH
from tests.support.mail import make_mail

pytestmark = pytest.mark.filterwarnings("ignore:response_mode:UserWarning")


def failure(action) -> GraphError:
    with pytest.raises(GraphError) as caught:
        action()
    error = caught.value
    assert error.message and "Traceback" not in error.message
    assert "eyJ" not in error.message  # no token, ever
    return error


def reply(sender: str, to: str = "customer@example.org") -> bytes:
    return make_mail(to=to, sender=sender, subject="Re: [#7] Question")


def test_missing_send_permission_is_named(graph, open_mailbox, graph_org) -> None:
    reader = graph_org.add_user("reader")
    token = graph_org.token_source(reader, [f"{GRAPH}/Mail.ReadWrite"])  # consented without Mail.Send
    mailbox = open_mailbox(reader, token)
    error = failure(lambda: mailbox.send_mime(reply(reader)))
    assert error.code == "ErrorAccessDenied" and error.status == 403
    assert error.permanent and error.reconnect and error.auth
    assert error.message.startswith(f"The sign-in of {reader} lacks the Microsoft Graph permission Mail.Send "
                                    f"needed to send from {reader} (ErrorAccessDenied)")
    assert "API permissions" in error.message and "reconnect the mailbox" in error.message
    assert mailbox.folder_id("inbox")  # reading is allowed


def test_missing_read_write_permission_is_named(graph, open_mailbox, graph_org) -> None:
    sender = graph_org.add_user("sender")
    mailbox = open_mailbox(sender, graph_org.token_source(sender, [f"{GRAPH}/Mail.Send"]))
    error = failure(lambda: mailbox.folder_id("inbox"))
    assert "lacks the Microsoft Graph permission Mail.ReadWrite needed to read" in error.message


def test_mailbox_not_enabled_for_rest(graph, mailbox, alice) -> None:
    graph.disable_rest(alice)
    error = failure(lambda: mailbox.folder_id("inbox"))
    assert error.code == "MailboxNotEnabledForRESTAPI" and error.permanent and not error.reconnect
    assert error.message.startswith(f"{alice} cannot be used over Microsoft Graph (MailboxNotEnabledForRESTAPI)")
    assert "use IMAP and SMTP for this mailbox" in error.message


def test_quota_exceeded(graph, mailbox, alice) -> None:
    graph.set_quota_exceeded(alice)
    error = failure(lambda: mailbox.send_mime(reply(alice)))
    assert error.code == "ErrorQuotaExceeded" and error.permanent
    assert error.message.startswith(f"{alice} is full (ErrorQuotaExceeded)") and "quota" in error.message


def test_message_over_the_mailbox_send_limit(graph, mailbox, alice) -> None:
    graph.set_max_send_size(alice, 1000)
    error = failure(lambda: mailbox.send_mime(make_mail(to="x@example.org", sender=alice, body="z" * 2000)))
    assert error.code == "ErrorMessageSizeExceeded" and error.permanent
    assert "as too large" in error.message and "at most 4 MB per request" in error.message


def test_invalid_recipients(graph, mailbox, alice) -> None:
    nobody = b"From: " + alice.encode() + b"\r\nSubject: no one\r\nMessage-ID: <n@x>\r\n\r\nbody\r\n"
    error = failure(lambda: mailbox.send_mime(nobody))
    assert error.code == "ErrorInvalidRecipients" and error.permanent
    assert "check the To, Cc and Bcc addresses" in error.message


def test_send_as_another_address_from_the_own_mailbox(graph, mailbox, alice) -> None:
    error = failure(lambda: mailbox.send_mime(reply("ceo@elsewhere.example")))
    assert error.code == "ErrorSendAsDenied"
    assert "its From address is another mailbox" in error.message


def test_item_not_found(graph, mailbox, alice) -> None:
    error = failure(lambda: mailbox.http.request("PATCH", f"me/messages/{new_immutable_id()}", operation="write",
                                                 json_body={"isRead": True}))
    assert error.not_found and not error.permanent
    assert error.message == (f"The message is no longer in {alice} (ErrorItemNotFound): it was moved or deleted "
                             "meanwhile; nothing to do.")


def test_sync_state_not_found_explained(graph, mailbox, alice) -> None:
    pages = list(mailbox.delta_pages("inbox", None))
    graph.expire_delta_tokens(alice)
    link = pages[-1].cursor.split(" ", 1)[1]
    error = failure(lambda: mailbox.http.get_json(link))
    assert error.code == "syncStateNotFound" and not error.permanent
    assert "read again from the start" in error.message and "Message-ID" in error.message


def test_unknown_mailbox(graph, open_mailbox, graph_org) -> None:
    delegate = graph_org.add_user("lost")
    from tests.support.graph import SHARED_SCOPES
    mailbox = open_mailbox(f"nobody@{graph_org.domain}", graph_org.token_source(delegate, SHARED_SCOPES),
                           shared=True, user=delegate)
    error = failure(lambda: mailbox.folder_id("inbox"))
    assert error.code == "ErrorInvalidUser" and error.permanent
    assert f"does not know the mailbox nobody@{graph_org.domain}" in error.message


def test_untrusted_certificate(graph, alice, alice_token) -> None:
    from connector.mail.graph import GraphMailbox
    with GraphMailbox(alice, alice_token, graph_host=graph.url, ca_bundle=None) as mailbox:
        error = failure(lambda: mailbox.folder_id("inbox"))
    assert error.code == "TlsError" and "[tls] ca_bundle" in error.message and error.retry_after


def test_nothing_listening(alice, alice_token, graph_org) -> None:
    from connector.mail.graph import GraphMailbox
    from tests.support.net import free_port
    with GraphMailbox(alice, alice_token, graph_host=f"https://127.0.0.1:{free_port()}",
                      ca_bundle=str(graph_org.ca_path), retries=1, backoff=0.01) as mailbox:
        error = failure(lambda: mailbox.folder_id("inbox"))
    assert error.code == "Unreachable" and error.retry_after and not error.permanent
    assert "did not answer" in error.message and "[microsoft] graph_host" in error.message
