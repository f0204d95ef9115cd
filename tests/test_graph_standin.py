"""The Graph stand-in speaks Microsoft Graph v1.0 as published, with real tokens from the test IdP.

Every call goes over HTTPS with plain `requests`; tokens come from msal's auth code flow against
the test IdP (audience https://graph.microsoft.com). These tests pin the stand-in's behaviour so
that the Graph transport built against it meets the real service's shapes and errors.
"""
from __future__ import annotations

import base64
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email import message_from_bytes, policy

import jwt
import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.corpus import corpus_names, load_mail
from tests.graph import GraphServer
from tests.support.graph import GRAPH, MAIL_SCOPES, SHARED_SCOPES, GraphOrg, \
    NotificationReceiver, graph, graph_org, webhook  # noqa: F401 - fixtures
from tests.support.mail import make_mail

pytestmark = pytest.mark.filterwarnings("ignore:response_mode:UserWarning")
USER_READ = [f"{GRAPH}/User.Read"]


@dataclass
class Api:
    """A Graph client for one token: paths relative to /v1.0."""

    graph: GraphServer
    org: GraphOrg
    token: str

    def call(self, method: str, path: str, **kwargs) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        url = path if path.startswith("https://") else f"{self.graph.base_url}/{path.lstrip('/')}"
        with self.org.http() as http:
            return http.request(method, url, headers=headers, timeout=30, **kwargs)

    def get(self, path: str, **kwargs) -> requests.Response:
        return self.call("GET", path, **kwargs)

    def post(self, path: str, json=None, **kwargs) -> requests.Response:
        return self.call("POST", path, json=json, **kwargs)

    def patch(self, path: str, json=None, **kwargs) -> requests.Response:
        return self.call("PATCH", path, json=json, **kwargs)

    def delete(self, path: str, **kwargs) -> requests.Response:
        return self.call("DELETE", path, **kwargs)

    def send_mime(self, raw: bytes, mailbox: str = "me") -> requests.Response:
        return self.post(f"{mailbox}/sendMail", json=None, data=base64.encodebytes(raw),
                         headers={"Content-Type": "text/plain"})

    def all_pages(self, path: str, **kwargs) -> list[dict]:
        items, url = [], path
        while url:
            page = self.get(url, **kwargs)
            assert page.status_code == 200, page.text
            items += page.json()["value"]
            url = page.json().get("@odata.nextLink")
            kwargs.pop("params", None)
        return items


def api(graph: GraphServer, org: GraphOrg, email: str, scopes: list[str] | None = None) -> Api:
    return Api(graph, org, org.token(email, scopes))


def error(response: requests.Response, status: int, code: str) -> dict:
    """The Graph error shape: code, message, innerError with date and request ids."""
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()["error"]
    assert body["code"] == code, body
    assert body["message"]
    inner = body["innerError"]
    assert inner["request-id"] == response.headers["request-id"]
    assert inner["client-request-id"] and inner["date"]
    return body


@pytest.fixture
def alice(graph_org: GraphOrg) -> str:
    return graph_org.add_user("alice", "Alice Example")


@pytest.fixture
def client(graph, graph_org, alice) -> Api:
    return api(graph, graph_org, alice, MAIL_SCOPES + USER_READ)


# ---- authentication ---------------------------------------------------------------------------

def test_missing_and_unreadable_tokens(graph, client) -> None:
    with client.org.http() as http:
        missing = http.get(f"{graph.base_url}/me/messages",
                           headers={"client-request-id": "abc-123"})
        body = error(missing, 401, "InvalidAuthenticationToken")
        assert body["innerError"]["client-request-id"] == "abc-123"
        assert missing.headers["client-request-id"] == "abc-123"
        assert 'client_id="00000003-0000-0000-c000-000000000000"' in \
            missing.headers["WWW-Authenticate"]
        garbage = http.get(f"{graph.base_url}/me/messages",
                           headers={"Authorization": "Bearer not-a-jwt"})
        assert "CompactToken" in error(garbage, 401, "InvalidAuthenticationToken")["message"]


def test_forged_and_foreign_signatures_are_refused(graph, client) -> None:
    head, payload, signature = client.token.split(".")
    claims = jwt.decode(client.token, options={"verify_signature": False})
    tampered = jwt.utils.base64url_encode(
        jwt.utils.force_bytes(__import__("json").dumps(dict(claims, upn="mallory@evil.test"))))
    forged = f"{head}.{tampered.decode()}.{signature}"
    assert client.get("me/messages").status_code == 200
    for bad in (forged, jwt.encode(claims, rsa.generate_private_key(65537, 2048),
                                   algorithm="RS256", headers=jwt.get_unverified_header(client.token))):
        answer = Api(graph, client.org, bad).get("me/messages")
        assert error(answer, 401, "InvalidAuthenticationToken")["message"] == \
            "Access token validation failure."


def test_outlook_audience_is_not_a_graph_token(graph, graph_org, alice) -> None:
    outlook = api(graph, graph_org, alice, ["https://outlook.office.com/IMAP.AccessAsUser.All"])
    answer = outlook.get("me/messages")
    assert "Invalid audience" in error(answer, 401, "InvalidAuthenticationToken")["message"]


def test_expired_token(graph, client) -> None:
    assert client.get("me/mailFolders").status_code == 200
    graph.advance(3600 + 301)  # the token's hour plus Microsoft's five minutes of skew
    answer = client.get("me/mailFolders")
    assert "expired" in error(answer, 401, "InvalidAuthenticationToken")["message"]


def test_revoked_session_with_enforced_revocation(graph, client, alice) -> None:
    client.org.idp.revoke(alice)
    assert client.get("me/messages").status_code == 200  # a JWT lives until it expires
    graph.verifier.enforce_revocation = True
    error(client.get("me/messages"), 401, "InvalidAuthenticationToken")


def test_missing_permission_is_403(graph, graph_org) -> None:
    sender = graph_org.add_user("sender")
    only_send = api(graph, graph_org, sender, [f"{GRAPH}/Mail.Send"])
    assert set(jwt.decode(only_send.token, options={"verify_signature": False})["scp"].split()) \
        >= {"Mail.Send"}
    error(only_send.get("me/mailFolders/inbox/messages"), 403, "ErrorAccessDenied")
    assert only_send.send_mime(make_mail(to="x@example.org", sender=sender)).status_code == 202
    reader = graph_org.add_user("reader")
    read_only = api(graph, graph_org, reader, [f"{GRAPH}/Mail.Read"])
    message = graph.deliver(reader, make_mail(to=reader))
    assert read_only.get(f"me/messages/{message.rest_id}").status_code == 200
    error(read_only.patch(f"me/messages/{message.rest_id}", {"isRead": True}), 403,
          "ErrorAccessDenied")
    error(read_only.send_mime(make_mail(to="x@example.org", sender=reader)), 403,
          "ErrorAccessDenied")


def test_other_tenant_is_not_found(graph, client, idp, ca) -> None:
    from tests.support.graph import make_graph_org
    other = make_graph_org(idp, ca.ca_path)
    stranger = other.add_user("stranger")
    graph.deliver(stranger, make_mail(to=stranger))
    error(client.get(f"users/{stranger}/messages"), 404, "ErrorInvalidUser")
    error(client.get("users/nobody@nowhere.test/messages"), 404, "ErrorInvalidUser")


# ---- users ------------------------------------------------------------------------------------

def test_me_and_users(graph, client, alice, graph_org) -> None:
    me = client.get("me").json()
    assert me["userPrincipalName"] == alice and me["mail"] == alice
    assert me["displayName"] == "Alice Example" and me["givenName"] == "Alice"
    assert me["id"] == graph_org.idp.users[alice].oid
    assert client.get(f"users/{alice}").json()["id"] == me["id"]
    assert client.get(f"users/{me['id']}/mailFolders/inbox").status_code == 200
    bob = graph_org.add_user("bob")
    error(client.get(f"users/{bob}"), 403, "Authorization_RequestDenied")
    no_profile = api(graph, graph_org, graph_org.add_user("carol"), MAIL_SCOPES)
    error(no_profile.get("me"), 403, "Authorization_RequestDenied")
    error(client.get("mailboxSettings"), 400, "BadRequest")
    assert client.get("https://" + graph.url.split("://")[1] + "/beta/me").status_code == 400


# ---- delegation: shared mailboxes -------------------------------------------------------------

def test_shared_mailbox_needs_full_access_and_send_as(graph, graph_org) -> None:
    delegate = graph_org.add_user("agent")
    shared = f"support@{graph_org.domain}"
    graph.mailbox(shared, "Support")
    graph.deliver(shared, make_mail(to=shared, subject="For the team"))
    own_scopes = api(graph, graph_org, delegate, MAIL_SCOPES)
    with_shared = api(graph, graph_org, delegate, SHARED_SCOPES)
    path = f"users/{shared}/mailFolders/inbox/messages"
    error(with_shared.get(path), 403, "ErrorAccessDenied")  # no Full Access yet
    graph_org.idp.grant_mailbox_access(delegate, shared)
    listed = with_shared.get(path)
    assert [m["subject"] for m in listed.json()["value"]] == ["For the team"]
    # Issued before the .Shared consent: Full Access alone does not open the mailbox.
    error(own_scopes.get(f"users/{shared}/messages"), 403, "ErrorAccessDenied")
    reply = make_mail(to="customer@example.org", sender=shared, subject="Re: For the team")
    error(with_shared.send_mime(reply, f"users/{shared}"), 403, "ErrorSendAsDenied")
    graph.grant_send_as(delegate, shared)
    assert with_shared.send_mime(reply, f"users/{shared}").status_code == 202
    assert graph.sent(shared) == [reply] and graph.sent(delegate) == []
    assert [m.mail.subject for m in graph.messages(shared, "sentitems")] == ["Re: For the team"]
    assert graph.sent_mail(shared)[0].sender == delegate


def test_own_scopes_do_not_open_a_shared_mailbox(graph, graph_org) -> None:
    delegate = graph_org.add_user("solo")
    shared = f"desk@{graph_org.domain}"
    graph.mailbox(shared)
    graph_org.idp.grant_mailbox_access(delegate, shared)
    narrow = api(graph, graph_org, delegate, MAIL_SCOPES)
    error(narrow.get(f"users/{shared}/messages"), 403, "ErrorAccessDenied")


# ---- mail folders -----------------------------------------------------------------------------

def test_mail_folders(graph, client, alice) -> None:
    names = [f["displayName"] for f in client.all_pages("me/mailFolders", params={"$top": "3"})]
    assert sorted(names) == sorted(["Archive", "Conversation History", "Deleted Items", "Drafts",
                                    "Inbox", "Junk Email", "Outbox", "Sent Items"])
    first = client.get("me/mailFolders", params={"$top": "3"}).json()
    assert len(first["value"]) == 3 and "$skip=3" in first["@odata.nextLink"]
    inbox = client.get("me/mailFolders/Inbox").json()
    assert client.get("me/mailFolders('inbox')").json()["id"] == inbox["id"]
    assert inbox["displayName"] == "Inbox" and inbox["isHidden"] is False
    assert {"parentFolderId", "childFolderCount", "unreadItemCount", "totalItemCount"} <= inbox.keys()
    for name in ("sentitems", "deleteditems", "archive", "drafts", "junkemail"):
        assert client.get(f"me/mailFolders/{name}").json()["id"] == graph.folder_id(alice, name)
    created = client.post("me/mailFolders/inbox/childFolders", {"displayName": "Tickets"})
    assert created.status_code == 201 and created.json()["parentFolderId"] == inbox["id"]
    error(client.post("me/mailFolders/inbox/childFolders", {"displayName": "tickets"}), 409,
          "ErrorFolderExists")
    children = client.get(f"me/mailFolders/{inbox['id']}/childFolders").json()["value"]
    assert [c["displayName"] for c in children] == ["Tickets"]
    assert client.get("me/mailFolders/inbox").json()["childFolderCount"] == 1
    nested = client.post(f"me/mailFolders/inbox/childFolders/{created.json()['id']}/childFolders",
                         {"displayName": "Done"})
    assert nested.status_code == 201
    top = client.post("me/mailFolders", {"displayName": "Processed"}).json()
    assert top["parentFolderId"] == graph.folder_id(alice, "msgfolderroot")
    error(client.post("me/mailFolders", {}), 400, "ErrorInvalidParameter")
    error(client.get("me/mailFolders/nonsense-id"), 400, "ErrorInvalidIdMalformed")
    error(client.get("me/mailFolders/" + graph.folder_id(alice, "inbox")[:-8] + "AAAAAAA="),
          404, "ErrorItemNotFound")
    hidden = client.get("me/mailFolders", params={"includeHiddenFolders": "true", "$top": "50"})
    assert len(hidden.json()["value"]) == len(names) + 1


# ---- messages ---------------------------------------------------------------------------------

def test_list_select_filter_and_paging(graph, client, alice) -> None:
    delivered = [graph.deliver(alice, make_mail(to=alice, subject=f"Mail {i}")) for i in range(25)]
    items = client.all_pages("me/mailFolders/inbox/messages",
                             params={"$select": "subject,internetMessageId", "$top": "7"})
    assert [i["subject"] for i in items] == [f"Mail {i}" for i in reversed(range(25))]
    assert len({i["id"] for i in items}) == 25
    assert all(set(i) == {"@odata.etag", "id", "subject", "internetMessageId"} for i in items)
    default = client.get("me/messages").json()
    assert len(default["value"]) == 10 and "$skip=10" in default["@odata.nextLink"]
    wanted = delivered[3].mail.internet_message_id
    found = client.get("me/mailFolders/inbox/messages",
                       params={"$filter": f"internetMessageId eq '{wanted}'"}).json()["value"]
    assert [m["id"] for m in found] == [delivered[3].rest_id]
    graph.store.update(graph.mailbox(alice), delivered[0], is_read=True)
    unread = client.all_pages("me/messages", params={"$filter": "isRead eq false", "$top": "50"})
    assert len(unread) == 24
    quoted = client.get("me/messages", params={"$filter": "subject eq 'it''s not there'"})
    assert quoted.json()["value"] == []
    by_sender = client.get("me/messages", params={
        "$filter": "from/emailAddress/address eq 'CUSTOMER@example.net' and "
                   "startswith(subject, 'Mail 2')", "$top": "50"}).json()["value"]
    assert sorted(m["subject"] for m in by_sender) == sorted(["Mail 2"] + [f"Mail {i}" for i in range(20, 25)])
    oldest = client.get("me/messages", params={"$orderby": "receivedDateTime asc", "$top": "1"})
    assert oldest.json()["value"][0]["subject"] == "Mail 0"
    error(client.get("me/messages", params={"$filter": "subject eq"}), 400, "BadRequest")
    error(client.get("me/messages", params={"$select": "subject,nonsense"}), 400,
          "RequestBroker--ParseUri")
    error(client.get("me/messages", params={"$top": "0"}), 400, "ErrorInvalidParameter")
    error(client.get("me/messages", params={"$frobnicate": "1"}), 400, "BadRequest")


def test_get_message_json(graph, client, alice) -> None:
    raw = make_mail(to=alice, sender="jane@example.org", subject="Printer broken",
                    body="It jams.", message_id="<abc@example.org>", html="<p>It <b>jams</b>.</p>")
    message = graph.deliver(alice, raw)
    body = client.get(f"me/messages/{message.rest_id}").json()
    assert body["id"] == message.rest_id and len(body["id"]) > 100
    assert body["internetMessageId"] == "<abc@example.org>"
    assert body["subject"] == "Printer broken" and body["isRead"] is False
    assert body["from"] == {"emailAddress": {"name": "Customer", "address": "jane@example.org"}}
    assert body["toRecipients"] == [{"emailAddress": {"name": alice, "address": alice}}]
    assert body["parentFolderId"] == graph.folder_id(alice, "inbox")
    assert body["body"]["contentType"] == "html" and "<b>jams</b>" in body["body"]["content"]
    assert body["bodyPreview"] == "It jams." and body["hasAttachments"] is False
    assert datetime.fromisoformat(body["receivedDateTime"].replace("Z", "+00:00")) <= \
        datetime.now(timezone.utc) + timedelta(seconds=2)
    assert body["@odata.context"].endswith("/messages/$entity")
    text = client.get(f"me/messages/{message.rest_id}",
                      headers={"Prefer": 'outlook.body-content-type="text"'})
    assert text.json()["body"] == {"contentType": "text", "content": "It jams.\n"}
    assert text.headers["Preference-Applied"] == 'outlook.body-content-type="text"'
    inbox_path = f"me/mailFolders/inbox/messages/{message.rest_id}"
    assert client.get(inbox_path).status_code == 200
    error(client.get(f"me/mailFolders/sentitems/messages/{message.rest_id}"), 404,
          "ErrorItemNotFound")
    error(client.get("me/messages/AAMk-not-real"), 400, "ErrorInvalidIdMalformed")


def test_value_is_the_exact_mime_delivered(graph, client, alice) -> None:
    names = corpus_names()[:40]
    if not names:
        pytest.skip("the zammad-mail corpus is not available")
    for name in names:
        raw = load_mail(name).raw
        message = graph.deliver(alice, raw)
        answer = client.get(f"me/messages/{message.rest_id}/$value")
        assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("text/plain")
        assert answer.content == raw, name
        assert client.get(f"me/messages/{message.rest_id}").status_code == 200, name


def test_mark_read_move_copy_and_delete(graph, client, alice) -> None:
    message = graph.deliver(alice, make_mail(to=alice, subject="Handle me"))
    old_key = message.change_key
    updated = client.patch(f"me/messages/{message.rest_id}", {"isRead": True})
    assert updated.status_code == 200 and updated.json()["isRead"] is True
    assert updated.json()["changeKey"] != old_key
    error(client.patch(f"me/messages/{message.rest_id}", {"subject": "x"}), 400,
          "ErrorInvalidPropertyUpdateSentMessage")
    error(client.patch(f"me/messages/{message.rest_id}", {"isRead": "yes"}), 400, "BadRequest")
    archive = graph.folder_id(alice, "archive")
    first_id = message.rest_id
    moved = client.post(f"me/messages/{first_id}/move", {"destinationId": "archive"})
    assert moved.status_code == 201
    assert moved.json()["id"] != first_id and moved.json()["parentFolderId"] == archive
    error(client.get(f"me/messages/{first_id}"), 404, "ErrorItemNotFound")
    assert client.get(f"me/messages/{moved.json()['id']}").json()["isRead"] is True
    error(client.post(f"me/messages/{moved.json()['id']}/move", {}), 400, "ErrorInvalidParameter")
    copy = client.post(f"me/messages/{moved.json()['id']}/copy", {"destinationId": "inbox"})
    assert copy.status_code == 201 and len(graph.messages(alice, "inbox")) == 1
    deleted = client.delete(f"me/messages/{moved.json()['id']}")
    assert deleted.status_code == 204 and deleted.content == b""
    in_trash = graph.messages(alice, "deleteditems")
    assert [m.mail.subject for m in in_trash] == ["Handle me"] and not graph.messages(alice, "archive")
    assert client.delete(f"me/messages/{in_trash[0].rest_id}").status_code == 204
    assert graph.messages(alice, "deleteditems") == []
    remaining = client.get("me/messages", params={"$select": "subject"}).json()["value"]
    assert [m["subject"] for m in remaining] == ["Handle me"]  # the copy in the Inbox
    purge = client.post(f"me/messages/{remaining[0]['id']}/permanentDelete")
    assert purge.status_code == 204 and client.get("me/messages").json()["value"] == []


def test_immutable_ids_survive_moves(graph, client, alice) -> None:
    message = graph.deliver(alice, make_mail(to=alice))
    prefer = {"Prefer": 'IdType="ImmutableId"'}
    listed = client.get("me/mailFolders/inbox/messages", headers=prefer).json()["value"]
    immutable = listed[0]["id"]
    assert immutable == message.immutable_id and immutable.startswith("AAkALg")
    moved = client.post(f"me/messages/{immutable}/move", {"destinationId": "archive"},
                        headers=prefer)
    assert moved.json()["id"] == immutable
    assert client.get(f"me/messages/{immutable}").json()["parentFolderId"] == \
        graph.folder_id(alice, "archive")


# ---- delta ------------------------------------------------------------------------------------

def _round(client: Api, url: str, size: int = 2, **headers) -> tuple[list[dict], str, int]:
    """Follow nextLinks to the deltaLink: (items, deltaLink, pages)."""
    items, pages = [], 0
    while True:
        page = client.get(url, headers={"Prefer": f"odata.maxpagesize={size}", **headers})
        assert page.status_code == 200, page.text
        assert page.headers["Preference-Applied"].startswith(f"odata.maxpagesize={size}")
        body = page.json()
        assert body["@odata.context"].endswith("$metadata#Collection(message)")
        items += body["value"]
        pages += 1
        assert len(body["value"]) <= size
        if "@odata.deltaLink" in body:
            assert "@odata.nextLink" not in body and "$deltatoken=" in body["@odata.deltaLink"]
            return items, body["@odata.deltaLink"], pages
        assert "$skiptoken=" in body["@odata.nextLink"]
        url = body["@odata.nextLink"]


def test_delta_round_trips(graph, client, alice) -> None:
    messages = [graph.deliver(alice, make_mail(to=alice, subject=f"D{i}")) for i in range(5)]
    items, delta_link, pages = _round(client, "me/mailFolders/inbox/messages/delta"
                                      "?$select=subject,isRead")
    assert pages == 3 and sorted(i["subject"] for i in items) == [f"D{i}" for i in range(5)]
    assert all(set(i) == {"@odata.type", "@odata.etag", "id", "subject", "isRead"} for i in items)
    assert {i["id"] for i in items} == {m.rest_id for m in messages}
    nothing, again, _ = _round(client, delta_link)
    assert nothing == []
    box = graph.mailbox(alice)
    graph.store.update(box, messages[0], is_read=True)
    old_ids = {messages[1].rest_id, messages[2].rest_id}
    client.post(f"me/messages/{messages[1].rest_id}/move", {"destinationId": "archive"})
    client.delete(f"me/messages/{messages[2].rest_id}")
    fresh = graph.deliver(alice, make_mail(to=alice, subject="D5"))
    changes, next_link, _ = _round(client, again)
    removed = {c["id"] for c in changes if "@removed" in c}
    assert removed == old_ids and all(c["@removed"] == {"reason": "deleted"}
                                      for c in changes if "@removed" in c)
    current = {c["id"]: c for c in changes if "@removed" not in c}
    assert set(current) == {messages[0].rest_id, fresh.rest_id}
    assert current[messages[0].rest_id]["isRead"] is True
    assert set(current[fresh.rest_id]) == {"@odata.type", "@odata.etag", "id", "subject", "isRead"}
    assert _round(client, next_link)[0] == []
    replay, _, _ = _round(client, again)  # a deltaLink can be used again
    assert {c["id"] for c in replay} == removed | set(current)


def test_delta_pages_can_be_fetched_again(graph, client, alice) -> None:
    for i in range(4):
        graph.deliver(alice, make_mail(to=alice, subject=f"R{i}"))
    first = client.get("me/mailFolders/inbox/messages/delta",
                       headers={"Prefer": "odata.maxpagesize=2"}).json()
    again = client.get(first["@odata.nextLink"], headers={"Prefer": "odata.maxpagesize=2"})
    twice = client.get(first["@odata.nextLink"], headers={"Prefer": "odata.maxpagesize=2"})
    assert again.json()["value"] == twice.json()["value"] and len(again.json()["value"]) == 2
    default = client.get("me/mailFolders/inbox/messages/delta").json()
    assert len(default["value"]) == 4 and "@odata.deltaLink" in default


def test_delta_change_type_filter_and_order(graph, client, alice) -> None:
    old = graph.deliver(alice, make_mail(to=alice, subject="Old"))
    _, link, _ = _round(client, "me/mailFolders/inbox/messages/delta?changeType=created")
    graph.store.update(graph.mailbox(alice), old, is_read=True)
    new = graph.deliver(alice, make_mail(to=alice, subject="New"))
    created, _, _ = _round(client, link)
    assert [c["id"] for c in created] == [new.rest_id]
    ordered, _, _ = _round(client, "me/mailFolders/inbox/messages/delta"
                           "?$orderby=receivedDateTime desc&$select=subject", size=10)
    assert [o["subject"] for o in ordered] == ["New", "Old"]
    future = (datetime.now(timezone.utc) + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    none, _, _ = _round(client, "me/mailFolders/inbox/messages/delta?$filter=receivedDateTime ge "
                        + future)
    assert none == []
    error(client.get("me/mailFolders/inbox/messages/delta", params={"$filter": "isRead eq true"}),
          400, "ErrorInvalidUrlQueryFilter")
    error(client.get("me/messages/delta"), 400, "BadRequest")


def test_expired_delta_tokens(graph, client, alice) -> None:
    graph.deliver(alice, make_mail(to=alice, subject="Kept"))
    _, link, _ = _round(client, "me/mailFolders/inbox/messages/delta")
    first_page = client.get("me/mailFolders/inbox/messages/delta",
                            headers={"Prefer": "odata.maxpagesize=1"})
    graph.deliver(alice, make_mail(to=alice, subject="Second"))
    graph.expire_delta_tokens(alice)
    error(client.get(link), 410, "syncStateNotFound")
    assert first_page.json().get("@odata.deltaLink")  # one mail then: the round had one page
    error(client.get(link.replace("$deltatoken=", "$deltatoken=x")), 410, "syncStateNotFound")
    fresh, new_link, _ = _round(client, "me/mailFolders/inbox/messages/delta")
    assert sorted(f["subject"] for f in fresh) == ["Kept", "Second"]
    assert client.get(new_link).status_code == 200
    graph.expire_delta_tokens(alice, resync=True)
    reset = client.get(new_link)
    error(reset, 410, "resyncRequired")
    location = reset.headers["Location"]
    assert location.endswith("/messages/delta?$deltatoken=")
    restarted, _, _ = _round(client, location)
    assert len(restarted) == 2


def test_delta_on_a_shared_mailbox_and_skiptoken_of_another_folder(graph, graph_org) -> None:
    delegate = graph_org.add_user("helper")
    shared = f"team@{graph_org.domain}"
    graph.mailbox(shared)
    graph_org.idp.grant_mailbox_access(delegate, shared)
    client = api(graph, graph_org, delegate, SHARED_SCOPES)
    for i in range(3):
        graph.deliver(shared, make_mail(to=shared, subject=f"T{i}"))
    items, _, _ = _round(client, f"users/{shared}/mailFolders/inbox/messages/delta")
    assert len(items) == 3
    page = client.get(f"users/{shared}/mailFolders/inbox/messages/delta",
                      headers={"Prefer": "odata.maxpagesize=1"}).json()
    assert f"/users/{shared}/mailFolders(" in page["@odata.nextLink"]
    wrong_folder = page["@odata.nextLink"].replace(graph.folder_id(shared, "inbox"),
                                                   graph.folder_id(shared, "archive"))
    error(client.get(wrong_folder), 410, "syncStateNotFound")


# ---- sending ----------------------------------------------------------------------------------

def test_send_mime_keeps_threading_headers(graph, client, alice, graph_org) -> None:
    bob = graph_org.add_user("bob")
    graph.mailbox(bob)
    raw = make_mail(to=f"{bob}, customer@example.org", sender=alice, subject="Re: [Ticket#42] Help",
                    message_id="<reply-1@helpdesk.test>", in_reply_to="<q-1@example.org>",
                    references="<q-0@example.org> <q-1@example.org>",
                    headers={"Bcc": "audit@example.org"})
    answer = client.send_mime(raw)
    assert answer.status_code == 202 and answer.content == b""
    [wire] = graph.sent(alice)
    assert b"Bcc" not in wire and wire == raw.replace(b"Bcc: audit@example.org\n", b"")
    record = graph.sent_mail(alice)[0]
    assert set(record.recipients) == {bob, "customer@example.org", "audit@example.org"}
    assert record.message_id == "<reply-1@helpdesk.test>"
    [saved] = graph.messages(alice, "sentitems")
    assert saved.raw == raw and saved.is_read  # Sent Items keeps the Bcc
    found = client.get("me/mailFolders/sentitems/messages", params={
        "$filter": "internetMessageId eq '<reply-1@helpdesk.test>'"}).json()["value"]
    assert [f["id"] for f in found] == [saved.rest_id]
    [arrived] = graph.messages(bob, "inbox")
    parsed = message_from_bytes(arrived.raw, policy=policy.default)
    assert parsed["In-Reply-To"] == "<q-1@example.org>"
    assert parsed["References"] == "<q-0@example.org> <q-1@example.org>"
    assert parsed["Subject"] == "Re: [Ticket#42] Help" and parsed["Bcc"] is None


def test_send_stamps_missing_message_id(graph, client, alice) -> None:
    raw = b"To: x@example.org\r\nSubject: bare\r\n\r\nhello\r\n"
    assert client.send_mime(raw).status_code == 202
    [wire] = graph.sent(alice)
    parsed = message_from_bytes(wire, policy=policy.default)
    assert parsed["Message-ID"].endswith(".prod.outlook.com>") and parsed["Date"]
    assert alice in parsed["From"] and wire.endswith(raw)


def test_send_errors(graph, client, alice, graph_org) -> None:
    bad = client.post("me/sendMail", json=None, data=b"%%% not base64 %%%",
                      headers={"Content-Type": "text/plain"})
    error(bad, 400, "ErrorMimeContentInvalidBase64String")
    error(client.send_mime(b"Subject: nobody\r\n\r\nhi\r\n"), 400, "ErrorInvalidRecipients")
    spoof = make_mail(to="x@example.org", sender=f"ceo@{graph_org.domain}")
    error(client.send_mime(spoof), 403, "ErrorSendAsDenied")
    graph.grant_send_as(alice, f"ceo@{graph_org.domain}")
    assert client.send_mime(spoof).status_code == 202
    huge = client.post("me/sendMail", json=None, data=b"A" * (4 * 1024 * 1024 + 4),
                       headers={"Content-Type": "text/plain"})
    error(huge, 413, "RequestEntityTooLarge")
    graph.set_max_send_size(alice, 2000)
    error(client.send_mime(make_mail(to="x@example.org", sender=alice, body="x" * 5000)), 400,
          "ErrorMessageSizeExceeded")
    graph.set_max_send_size(alice, 35 * 1024 * 1024)
    graph.set_quota_exceeded(alice)
    error(client.send_mime(make_mail(to="x@example.org", sender=alice)), 403, "ErrorQuotaExceeded")
    graph.set_quota_exceeded(alice, False)
    graph.disable_rest(alice)
    error(client.send_mime(make_mail(to="x@example.org", sender=alice)), 404,
          "MailboxNotEnabledForRESTAPI")
    error(client.get("me/mailFolders/inbox/messages"), 404, "MailboxNotEnabledForRESTAPI")
    graph.disable_rest(alice, False)
    assert len(graph.sent(alice)) == 1  # only the permitted Send As went out


def test_send_json(graph, client, alice) -> None:
    message = {"subject": "Hello", "body": {"contentType": "HTML", "content": "<p>Hi</p>"},
               "toRecipients": [{"emailAddress": {"address": "x@example.org", "name": "X"}}],
               "internetMessageHeaders": [{"name": "x-ticket", "value": "42"}]}
    assert client.post("me/sendMail", {"message": message}).status_code == 202
    assert len(graph.messages(alice, "sentitems")) == 1
    wire = message_from_bytes(graph.sent(alice)[0], policy=policy.default)
    assert wire["x-ticket"] == "42" and wire["To"].addresses[0].addr_spec == "x@example.org"
    assert client.post("me/sendMail", {"message": message, "saveToSentItems": "false"}) \
        .status_code == 202
    assert len(graph.sent(alice)) == 2 and len(graph.messages(alice, "sentitems")) == 1
    threaded = dict(message, internetMessageHeaders=[{"name": "In-Reply-To", "value": "<a@b>"}])
    error(client.post("me/sendMail", {"message": threaded}), 400, "InvalidInternetMessageHeader")
    error(client.post("me/sendMail", {}), 400, "ErrorInvalidParameter")


# ---- throttling and injected trouble ----------------------------------------------------------

def _concurrently(calls: list) -> list[requests.Response]:
    results: list = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run(i: int) -> None:
        barrier.wait()
        results[i] = calls[i]()
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


def test_four_concurrent_requests_per_mailbox(graph, client, alice, graph_org) -> None:
    bob = graph_org.add_user("bob")
    bob_client = Api(graph, graph_org, graph_org.token(bob))
    graph.delay(alice, 3.0)  # long enough for all nine TLS handshakes on a busy machine
    answers = _concurrently([lambda: client.get("me/mailFolders/inbox")] * 6
                            + [lambda: bob_client.get("me/mailFolders/inbox")] * 3)
    alice_codes = sorted(a.status_code for a in answers[:6])
    assert alice_codes == [200, 200, 200, 200, 429, 429]
    for throttled in (a for a in answers[:6] if a.status_code == 429):
        body = error(throttled, 429, "ApplicationThrottled")
        assert "MailboxConcurrency" in body["message"] and int(throttled.headers["Retry-After"]) >= 1
    assert [a.status_code for a in answers[6:]] == [200, 200, 200]
    graph.delay(alice, 0)
    assert client.get("me/mailFolders/inbox").status_code == 200


def test_throttle_one_mailbox_by_requests_and_time(graph, client, alice, graph_org) -> None:
    bob = graph_org.add_user("bob")
    bob_client = Api(graph, graph_org, graph_org.token(bob))
    graph.throttle(alice, requests=2, retry_after=7)
    for _ in range(2):
        refused = client.get("me/messages")
        error(refused, 429, "ApplicationThrottled")
        assert refused.headers["Retry-After"] == "7"
        assert bob_client.get("me/messages").status_code == 200
    assert client.get("me/messages").status_code == 200
    graph.throttle(alice, seconds=30, retry_after=30, status=503, code="ServiceUnavailable")
    busy = client.get("me/messages")
    error(busy, 503, "ServiceUnavailable")
    assert 1 <= int(busy.headers["Retry-After"]) <= 30
    assert bob_client.get("me/messages").status_code == 200
    graph.advance(31)
    assert client.get("me/messages").status_code == 200


def test_request_rate_window(graph, client, alice, graph_org) -> None:
    bob = graph_org.add_user("bob")
    bob_client = Api(graph, graph_org, graph_org.token(bob))
    graph.limits.rate_limit = 5
    for _ in range(5):
        assert client.get("me/mailFolders/inbox").status_code == 200
    over = client.get("me/mailFolders/inbox")
    error(over, 429, "ApplicationThrottled")
    assert 1 <= int(over.headers["Retry-After"]) <= 601
    assert bob_client.get("me/mailFolders/inbox").status_code == 200
    graph.advance(601)
    assert client.get("me/mailFolders/inbox").status_code == 200


def test_injected_failures_and_lost_answers(graph, client, alice) -> None:
    graph.fail_next(2, status=503, retry_after=3, address=alice)
    first = client.get("me/messages")
    error(first, 503, "serviceNotAvailable")
    assert first.headers["Retry-After"] == "3"
    error(client.get("me/messages"), 503, "serviceNotAvailable")
    assert client.get("me/messages").status_code == 200
    graph.fail_next(status=504, method="POST", path="/sendMail", after=True)
    raw = make_mail(to="x@example.org", sender=alice, message_id="<once@helpdesk.test>")
    error(client.send_mime(raw), 504, "UnknownError")
    assert graph.sent(alice) == [raw]  # it went out; only the 202 was lost
    found = client.get("me/mailFolders/sentitems/messages",
                       params={"$filter": "internetMessageId eq '<once@helpdesk.test>'"})
    assert len(found.json()["value"]) == 1
    graph.fail_next(status=500, code="ErrorInternalServerError", path="/subscriptions")
    error(client.get("subscriptions"), 500, "ErrorInternalServerError")


def test_request_log(graph, client, alice) -> None:
    graph.clear_log()
    graph.deliver(alice, make_mail(to=alice))
    client.get("me/mailFolders/inbox/messages", params={"$top": "1"})
    client.get("me/messages/AAMkAAAA")
    log = graph.requests_for(alice)
    assert [(r.method, r.status, r.code) for r in log] == [
        ("GET", 200, None), ("GET", 400, "ErrorInvalidIdMalformed")]
    assert log[0].path == "/v1.0/me/mailFolders/inbox/messages" and log[0].query == "%24top=1"
    assert log[0].user == alice and log[0].app_id == client.org.app.client_id


# ---- change notifications ---------------------------------------------------------------------

def _subscribe(client: Api, receiver: NotificationReceiver, **fields) -> requests.Response:
    body = {"changeType": "created", "notificationUrl": f"{receiver.url}/notify",
            "lifecycleNotificationUrl": f"{receiver.url}/lifecycle",
            "resource": "me/mailFolders('inbox')/messages",
            "expirationDateTime": (datetime.now(timezone.utc) + timedelta(days=2)).isoformat(),
            "clientState": "s3cret-state"}
    body.update(fields)
    return client.post("subscriptions", {k: v for k, v in body.items() if v is not None})


def test_subscription_validation_and_notifications(graph, client, alice, webhook) -> None:
    created = _subscribe(client, webhook)
    assert created.status_code == 201, created.text
    sub = created.json()
    assert sub["resource"] == "me/mailFolders('inbox')/messages"
    assert sub["changeType"] == "created" and sub["clientState"] == "s3cret-state"
    assert sub["applicationId"] == client.org.app.client_id
    assert sub["creatorId"] == client.org.idp.users[alice].oid
    assert sub["expirationDateTime"].endswith("Z") and len(webhook.validations) == 2
    assert webhook.validations[0].startswith("Validation: Testing client application")
    message = graph.deliver(alice, make_mail(to=alice, subject="Ping"))
    graph.deliver(alice, make_mail(to=alice), folder="archive")  # not the subscribed folder
    [note] = webhook.wait_for(1, "/notify")
    assert note["subscriptionId"] == sub["id"] and note["changeType"] == "created"
    assert note["clientState"] == "s3cret-state"
    assert note["tenantId"] == client.org.tenant.tenant_id
    assert note["resourceData"]["id"] == message.rest_id
    assert note["resource"] == f"Users/{client.org.idp.users[alice].oid}/Messages/{message.rest_id}"
    assert client.get(note["resource"]).json()["subject"] == "Ping"
    assert graph.wait_notifications() and len(webhook.notifications("/notify")) == 1
    assert [s["id"] for s in client.get("subscriptions").json()["value"]] == [sub["id"]]


def test_subscription_request_rules(graph, client, ca) -> None:
    with NotificationReceiver(ca) as receiver:
        now = datetime.now(timezone.utc)
        too_long = _subscribe(client, receiver,
                              expirationDateTime=(now + timedelta(minutes=10_081)).isoformat())
        assert "10080 minutes" in error(too_long, 400, "InvalidRequest")["message"]
        short = _subscribe(client, receiver,
                           expirationDateTime=(now + timedelta(minutes=5)).isoformat())
        expires = datetime.fromisoformat(short.json()["expirationDateTime"].replace("Z", "+00:00"))
        assert timedelta(minutes=44) < expires - now < timedelta(minutes=46)
        error(_subscribe(client, receiver, clientState=None, changeType="renamed"), 400,
              "InvalidRequest")
        error(_subscribe(client, receiver, resource="me/events"), 400, "InvalidRequest")
        error(_subscribe(client, receiver, expirationDateTime=None), 400, "InvalidRequest")
        error(_subscribe(client, receiver, includeResourceData=True), 400, "InvalidRequest")
    with NotificationReceiver(ca, tls=False) as plain:
        error(_subscribe(client, plain), 400, "InvalidRequest")
        graph.allow_http_notifications = True
        assert _subscribe(client, plain).status_code == 201


@pytest.mark.parametrize("mode, words", [("wrong", "must exactly match"),
                                         ("status", "'NotFound'"), ("html", "text/plain"),
                                         ("slow", "timed out")])
def test_failed_validation_creates_nothing(graph, client, webhook, mode, words) -> None:
    webhook.validation = mode
    webhook.slow_seconds = 1.5
    graph.validation_timeout = 0.5
    body = error(_subscribe(client, webhook), 400, "InvalidRequest")
    assert body["message"].startswith("Subscription validation request") and words in body["message"]
    assert graph.subscriptions() == [] and client.get("subscriptions").json()["value"] == []


def test_renew_delete_and_expiry(graph, client, alice, webhook) -> None:
    sub_id = _subscribe(client, webhook).json()["id"]
    later = (datetime.now(timezone.utc) + timedelta(days=6)).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")
    renewed = client.patch(f"subscriptions/{sub_id}", {"expirationDateTime": later})
    assert renewed.status_code == 200 and renewed.json()["expirationDateTime"].startswith(later[:19])
    error(client.patch(f"subscriptions/{sub_id}", {"lifecycleNotificationUrl": webhook.url}), 400,
          "InvalidRequest")
    assert client.get(f"subscriptions/{sub_id}").json()["id"] == sub_id
    assert client.delete(f"subscriptions/{sub_id}").status_code == 204
    error(client.get(f"subscriptions/{sub_id}"), 404, "ResourceNotFound")
    graph.deliver(alice, make_mail(to=alice))
    second = _subscribe(client, webhook).json()["id"]
    graph.expire_subscription(second)
    graph.deliver(alice, make_mail(to=alice))
    assert graph.wait_notifications()
    time.sleep(0.3)
    assert webhook.notifications("/notify") == []
    error(client.get(f"subscriptions/{second}"), 404, "ResourceNotFound")


def test_lifecycle_notifications(graph, client, alice, webhook) -> None:
    sub_id = _subscribe(client, webhook).json()["id"]
    graph.send_lifecycle(sub_id, "reauthorizationRequired", pause=True)
    [event] = webhook.wait_for(1, "/lifecycle")
    assert event["lifecycleEvent"] == "reauthorizationRequired" and event["subscriptionId"] == sub_id
    assert event["clientState"] == "s3cret-state"
    graph.deliver(alice, make_mail(to=alice, subject="while paused"))
    assert [d.kind for d in graph.notifications("dropped")] == ["dropped"]
    assert client.post(f"subscriptions/{sub_id}/reauthorize").status_code == 204
    resumed = graph.deliver(alice, make_mail(to=alice, subject="after"))
    [note] = webhook.wait_for(1, "/notify")
    assert note["resourceData"]["id"] == resumed.rest_id
    graph.send_lifecycle(sub_id, "subscriptionRemoved")
    assert [e["lifecycleEvent"] for e in webhook.wait_for(2, "/lifecycle")] == \
        ["reauthorizationRequired", "subscriptionRemoved"]
    error(client.get(f"subscriptions/{sub_id}"), 404, "ResourceNotFound")


def test_undeliverable_notifications_end_in_missed(graph, client, alice, webhook) -> None:
    graph.notifier.retry_delays = [0.1, 0.1]
    sub_id = _subscribe(client, webhook).json()["id"]
    webhook.status = 500
    graph.deliver(alice, make_mail(to=alice))
    events = webhook.wait_for(1, "/lifecycle", timeout=15)
    assert events and {e["lifecycleEvent"] for e in events} == {"missed"}
    attempts = [d for d in graph.notifications("change") if d.subscription_id == sub_id]
    assert [(d.attempt, d.status) for d in attempts] == [(0, 500), (1, 500), (2, 500)]


def test_reauthorization_before_the_token_expires(graph, client, webhook) -> None:
    _subscribe(client, webhook)
    graph.advance(3600 - 14 * 60)  # 14 minutes before the creating token expires
    [event] = webhook.wait_for(1, "/lifecycle")
    assert event["lifecycleEvent"] == "reauthorizationRequired"


def test_subscription_scope_rules(graph, graph_org, client, webhook) -> None:
    shared = f"shared@{graph_org.domain}"
    graph.mailbox(shared)
    error(_subscribe(client, webhook, resource=f"users/{shared}/mailFolders('inbox')/messages"),
          403, "ExtensionError")
    mine = _subscribe(client, webhook, resource="/me/messages")
    assert mine.status_code == 201
    other_app_org = graph_org
    other_app = other_app_org.idp.add_app(other_app_org.tenant, secret="other",
                                          redirect_uris=["http://127.0.0.1:5000/auth/microsoft/callback"],
                                          permissions=list(MAIL_SCOPES))
    stranger = GraphOrg(other_app_org.idp, other_app_org.ca_path, other_app_org.tenant, other_app,
                        "other", other_app_org.domain)
    intruder = Api(graph, stranger, stranger.token(other_app_org.users[0]))
    error(intruder.get(f"subscriptions/{mine.json()['id']}"), 404, "ResourceNotFound")
    error(intruder.delete(f"subscriptions/{mine.json()['id']}"), 404, "ResourceNotFound")


def test_immutable_ids_in_notifications_and_own_user_resource(graph, client, alice, webhook) -> None:
    oid = client.org.idp.users[alice].oid
    created = client.post("subscriptions", {
        "changeType": "created,updated,deleted", "notificationUrl": f"{webhook.url}/notify",
        "resource": f"users/{oid}/messages", "clientState": "x",
        "expirationDateTime": (datetime.now(timezone.utc) + timedelta(days=1)).isoformat()},
        headers={"Prefer": 'IdType="ImmutableId"'})
    assert created.status_code == 201 and created.json()["changeType"] == "created,updated,deleted"
    message = graph.deliver(alice, make_mail(to=alice))
    client.patch(f"me/messages/{message.rest_id}", {"isRead": True})
    notes = webhook.wait_for(2, "/notify")
    assert [(n["changeType"], n["resourceData"]["id"]) for n in notes] == \
        [("created", message.immutable_id), ("updated", message.immutable_id)]
