"""A malformed query parameter or id is the caller's mistake: a 400 that says which and why (or a 404
for an id that cannot exist), on every route and API endpoint, never a 500."""
from __future__ import annotations

import re

import pytest

from tests.support.world import seed
from tests.web.test_authorization import build_url, url_values

# What each parameter must look like, and values that do not.
MALFORMED = {
    "page": ["-1", "0", "²", "١", "1.5", "abc", "1e3", " 1", "99999999999999999999", "9" * 5000],
    "q": ["\x00abc", "abc\x00", "a\r\nb", "a\x0bb", "a\u2028b", "x" * 501],
    "status": ["bogus", "OPEN", "open,closed"],
    "account": ["abc", "@", "a@", "@b", "a@b@c", "a b@c.test", "a\x00@b.test", "x" * 400 + "@b.test"],
    "partial": ["yes", "2", "true"],
    "images": ["yes", "2"],
    "inline": ["true", "-1"],
}
# Which route reads which of them (the rest of the app reads none of these).
READS = {
    "/tickets": ["page", "q", "status", "account", "partial"],
    "/accounts": ["page", "q"],  # Mailboxes, paged and searchable (connector/mailbox_list.py)
    "/api/v1/tickets": ["page", "q", "status", "account"],
    "/tickets/{ticket_id}/articles/{article_id}/body": ["images"],
    "/tickets/{ticket_id}/attachments/{attachment_id}": ["inline"],
}
# What the sign-in, connect and callback routes read besides.
AUTH_PARAMETERS = ["next", "mailbox", "login_hint", "state", "code", "error", "error_description",
                   "session_state", "admin_consent", "tenant"]
AUTH_ROUTES = ("/", "/login", "/auth/microsoft/callback")
NASTY = ["\x00abc", "²", "99999999999999999999", "9" * 5000, "\r\nX-Injected: 1\u202e", "//evil.example/@b@c"]


@pytest.fixture
def world(make_app):
    return seed(make_app())


def _sentence(response) -> str:
    if response.is_json:
        body = response.get_json()
        assert body["error"] == "bad_request", body
        return body["detail"]
    match = re.search(r'<p class="problem">(.*?)</p>', response.get_data(as_text=True), re.S)
    assert match, response.get_data(as_text=True)[:500]
    return match.group(1)


@pytest.mark.parametrize("path", sorted(READS))
def test_each_malformed_parameter_is_a_400_that_names_it(world, path):
    url = path.format(ticket_id=world.ticket_id, article_id=world.article_id, attachment_id=world.attachment_id)
    client = world.client("token:admin" if path.startswith("/api/") else "admin")
    assert client.get(url).status_code == 200
    for name in READS[path]:
        for value in MALFORMED[name]:
            response = client.get(url, query_string={name: value})
            assert response.status_code == 400, (path, name, value, response.status_code)
            sentence = _sentence(response)
            assert name in sentence or "search text" in sentence, (name, sentence)
            assert sentence.endswith((".", "again.")) and len(sentence) > 20, sentence
            assert "Traceback" not in response.get_data(as_text=True)


def test_well_formed_parameters_still_work(world):
    client = world.client("member")
    api = world.client("token:member")
    for query in ({"page": "1"}, {"page": "2"}, {"status": "open"}, {"status": ""}, {"account": world.address},
                  {"account": world.address.upper()}, {"q": "Confidential"}, {"q": "  "}, {"partial": "1"},
                  {"page": "1000000"}):
        assert client.get("/tickets", query_string=query).status_code == 200, query
        if "partial" not in query:
            assert api.get("/api/v1/tickets", query_string=query).status_code == 200, query
    found = api.get("/api/v1/tickets", query_string={"account": world.address, "q": "confidential"}).get_json()
    assert [t["subject"] for t in found["items"]] == [world.subject]
    for query in ({"page": "1"}, {"page": "2"}, {"page": "1000000"}, {"q": world.address.upper()}, {"q": "  "}):
        assert client.get("/accounts", query_string=query).status_code == 200, query
    live = client.get("/tickets", query_string={"partial": "1"}).get_json()
    assert [row["subject"] for row in live["items"]] == [world.subject]


def test_no_parameter_on_any_route_gives_a_500(world):
    """Every GET route, with the parameters the app reads set to hostile values, signed in (pages as an
    admin, who reaches the most code, the API with an admin's token) and not."""
    for rule in world.app.url_map.iter_rules():
        if "GET" not in rule.methods:
            continue
        url = build_url(rule.rule, url_values(world, rule.rule))
        names = sorted(MALFORMED) + (AUTH_PARAMETERS if rule.rule in AUTH_ROUTES else [])
        roles = ["token:admin" if rule.rule.startswith("/api/") else "admin"]
        for role in roles + (["anonymous"] if rule.rule in AUTH_ROUTES else []):
            client = world.client(role)
            for name in names:
                for value in NASTY:
                    response = client.get(url, query_string={name: value})
                    assert response.status_code < 500, (role, url, name, value[:40], response.status_code)


@pytest.mark.parametrize("bad_id", ["0", "18446744073709551616", "9223372036854775808", "9" * 5000])
def test_ids_that_cannot_exist_are_404(world, bad_id):
    admin, api = world.client("admin"), world.client("token:admin")
    for rule in world.app.url_map.iter_rules():
        if "<int:" not in rule.rule:
            continue
        for name in re.findall(r"<int:(\w+)>", rule.rule):
            values = url_values(world, rule.rule) | {name: bad_id}
            url = build_url(rule.rule, values)
            client = api if rule.rule.startswith("/api/") else admin
            for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
                response = client.get(url) if method == "GET" else client.post(url, data={"csrf_token": client.csrf})
                # removing someone who is no member of a mailbox one manages is a no-op that goes back to it
                allowed = (404, 302) if name == "user_id" and rule.rule.endswith("/remove") else (404,)
                assert response.status_code in allowed, (method, url[:80], response.status_code)
