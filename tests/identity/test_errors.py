"""Every AADSTS code the app explains becomes a sentence that says what happened and names the fix."""
from __future__ import annotations

import re

import pytest

from connector.identity import errors
from connector.identity.errors import Context, aadsts_code, explain

CTX = Context(tenant="contoso.com", client_id="11111111-2222-3333-4444-555555555555",
              callback_url="https://helpdesk.example/auth/microsoft/callback",
              authority_host="https://login.microsoftonline.com", address="info@contoso.com",
              admin_consent_url="https://login.microsoftonline.com/contoso.com/v2.0/adminconsent?client_id=1111")

# Words that start a fix: what the person should do next.
FIX = re.compile(r"\b(reconnect|click|ask|enter|make|copy|paste|create|use|add|register|sign in|check|complete|"
                 r"report|try again|start again)\b", re.I)

# The codes README and DESIGN promise to explain, and what the fix must mention.
PROMISED = {
    65001: ("admin", "consent"), 65004: ("Connect Microsoft 365", "Accept"), 50194: ("multitenant", "tenant) ID"),
    700016: ("Application (client) ID",), 7000215: ("Value", "Secret ID"), 7000222: ("new client secret",),
    90002: ("Directory (tenant) ID",), 50011: ("redirect URI", "Web platform"), 9002325: ("Web platform",),
    50173: ("reconnect",), 50076: ("reconnect", "MFA"), 70043: ("reconnect",), 700082: ("reconnect",),
    50020: ("multitenant",), 53003: ("Conditional Access",),
}
GRANT_GONE = {65001, 50034, 50057, 50173, 50076, 50079, 50078, 70043, 700082, 700084, 50133, 53003, 70000, 9002313}


def description(code: int) -> str:
    """What Microsoft sends: the code, its text, and trace lines."""
    return (f"AADSTS{code}: Something technical happened.\r\nTrace ID: 0a1b2c\r\n"
            "Correlation ID: 3d4e5f\r\nTimestamp: 2024-05-01 10:00:00Z")


@pytest.mark.parametrize("code", sorted(errors._SENTENCES))
def test_every_known_code_is_a_sentence_with_the_fix(code):
    explained = explain("invalid_grant", description(code), CTX)
    message = explained.message
    assert explained.code == code
    assert f"(AADSTS{code}" in message  # the code, in brackets, so an admin can look it up
    assert message.endswith(".") and message.lstrip("\"")[0].isupper()
    assert "{" not in message and "}" not in message  # every placeholder filled
    assert "Trace ID" not in message and "Correlation ID" not in message and "Something technical" not in message
    what, _, fix = message.partition(": ")
    assert what and fix, message  # "what happened: what to do"
    assert FIX.search(fix), f"no fix named in: {message}"
    assert explained.needs_reconnect is (code in GRANT_GONE)


@pytest.mark.parametrize("code, words", sorted(PROMISED.items()))
def test_the_promised_codes_name_their_fix(code, words):
    assert code in errors._SENTENCES
    message = explain("access_denied", f"AADSTS{code}: x", CTX).message
    for word in words:
        assert word in message, (code, word, message)


def test_sentences_use_the_context():
    assert "\"contoso.com\"" in explain("invalid_request", "AADSTS50194: x", CTX).message
    assert CTX.client_id in explain("unauthorized_client", "AADSTS700016: x", CTX).message
    assert CTX.callback_url in explain("invalid_request", "AADSTS50011: x", CTX).message
    assert CTX.admin_consent_url in explain("consent_required", "AADSTS65001: x", CTX).message


def test_without_context_the_sentences_still_read_well():
    admin_consent = explain("consent_required", "AADSTS65001: x").message
    assert "Azure portal > App registrations > API permissions > Grant admin consent" in admin_consent
    assert "the callback URL" in explain("invalid_request", "AADSTS50011: x").message
    assert "\"?\"" in explain("invalid_request", "AADSTS90002: x").message


def test_the_code_is_found_in_the_error_too():
    assert explain("AADSTS7000215", None).code == 7000215
    assert aadsts_code("invalid_client") is None and aadsts_code(None) is None
    assert aadsts_code("xx AADSTS50173: y AADSTS1") == 50173


@pytest.mark.parametrize("error, words, reconnect", [
    ("access_denied", ("Access was denied", "accept the permissions"), False),
    ("invalid_grant", ("no longer accepts", "reconnect the mailbox"), True),
    ("invalid_client", ("refused the app's credentials", "check the Client ID and Client secret"), False),
    ("temporarily_unavailable", ("temporarily unavailable", "try again"), False),
    ("server_error", ("temporarily unavailable", "try again"), False),
])
def test_errors_without_a_known_code(error, words, reconnect):
    explained = explain(error, None)
    for word in words:
        assert word in explained.message
    assert explained.needs_reconnect is reconnect and explained.code is None


def test_an_unknown_code_keeps_it_and_the_first_line_only():
    text = "AADSTS123456: The thing failed because of reasons.\r\nTrace ID: abc\r\nCorrelation ID: def"
    explained = explain("invalid_request", text)
    assert explained.code == 123456 and not explained.needs_reconnect
    assert explained.message == ("Microsoft answered with an error (AADSTS123456): \"The thing failed because of "
                                 "reasons.\". Try again; if it persists, check the app registration on the "
                                 "Microsoft 365 app page.")


def test_an_unknown_grant_error_with_a_code_is_a_reconnect():
    explained = explain("invalid_grant", "AADSTS999999: gone")
    assert explained.needs_reconnect and "(AADSTS999999)" in explained.message


def test_an_error_without_code_or_description():
    assert explain("weird_error").message.startswith("Microsoft answered with an error (weird_error). Try again")
    assert explain(None).message.startswith("Microsoft answered with an error. Try again")


def test_a_long_description_is_cut():
    explained = explain("invalid_request", "AADSTS1: " + "x" * 5000)
    assert len(explained.message) < 500
