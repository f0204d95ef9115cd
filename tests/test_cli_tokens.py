"""`connector create-token / list-tokens / revoke-token` (DESIGN.md, "CLI")."""
from __future__ import annotations

import logging
import re
from datetime import timedelta

from connector.models import ApiToken, User, utcnow
from tests.support.app import PASSWORD

TOKEN = re.compile(r"ctr_[A-Za-z0-9_-]{40,}")


def _user(runner, email: str = "kim@helpdesk.test") -> str:
    assert runner.invoke("create-user", email, "--password-stdin", input=PASSWORD + "\n").exit_code == 0
    return email


def _api(app, token: str):
    return app.test_client().get("/api/v1/accounts", headers={"Authorization": f"Bearer {token}"})


def test_create_token_with_name_and_expiry(runner, app):
    email = _user(runner)
    result = runner.invoke("create-token", email, "--name", "nightly export", "--expires-days", "30")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert result.stdout == token + "\n" and TOKEN.fullmatch(token)  # only the token on stdout
    assert "created API token" in result.stderr and token not in result.stderr
    with app.extensions["connector"].db.session() as session:
        row = session.query(ApiToken).one()
        assert row.name == "nightly export"
        assert timedelta(days=29, hours=23) < row.expires_at - utcnow() <= timedelta(days=30)
    assert _api(app, token).status_code == 200


def test_list_tokens_shows_everything_but_the_tokens(runner, app, mocker):
    email = _user(runner)
    first = runner.invoke("create-token", email, "--name", "reporting script").stdout.strip()
    second = runner.invoke("create-token", email, "--expires-days", "1").stdout.strip()
    _api(app, first)
    result = runner.invoke("list-tokens", email)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["ID", "STATE", "CREATED", "EXPIRES", "LAST", "USED", "NAME"]
    by_id = {line.split()[0]: line for line in lines[1:]}
    assert set(by_id) == {"1", "2"}
    assert by_id["1"].split()[1] == "active" and by_id["1"].endswith("reporting script")
    assert "never" in by_id["1"].split()[4:5] and by_id["1"].split()[5] != "never"  # never expires; used
    assert by_id["2"].endswith("-") and by_id["2"].split()[4] != "never"  # no name; expires
    assert first not in result.output and second not in result.output
    mocker.patch("connector.api_tokens.utcnow", return_value=utcnow() + timedelta(days=2))
    assert runner.invoke("list-tokens", email).stdout.splitlines()[1].split()[1] == "expired"


def test_list_tokens_of_someone_without_any(runner, app):
    result = runner.invoke("list-tokens", _user(runner))
    assert result.exit_code == 0 and result.stdout == "" and "has no API tokens" in result.stderr


def test_revoke_token_stops_it_at_once(runner, app):
    email = _user(runner)
    token = runner.invoke("create-token", email, "--name", "old laptop").stdout.strip()
    assert _api(app, token).status_code == 200
    result = runner.invoke("revoke-token", "1")
    assert result.exit_code == 0 and result.stdout.strip() == f"revoked API token 1 (old laptop) of {email}"
    refused = _api(app, token)
    assert refused.status_code == 401 and "revoked" in refused.get_json()["detail"]
    again = runner.invoke("revoke-token", "1")
    assert again.exit_code == 0 and "was revoked already" in again.stdout
    assert runner.invoke("list-tokens", email).stdout.splitlines()[1].split()[1] == "revoked"


def test_token_commands_fail_with_sentences(runner, app):
    missing = runner.invoke("revoke-token", "42")
    assert missing.exit_code == 1 and "Error: no API token with ID 42" in missing.output
    assert "Traceback" not in missing.output
    unknown = runner.invoke("list-tokens", "nobody@helpdesk.test")
    assert unknown.exit_code == 1 and "Error: no user nobody@helpdesk.test" in unknown.output
    email = _user(runner)
    for days in ("0", "-3", "soon", "4000"):
        bad = runner.invoke("create-token", email, "--expires-days", days)
        assert bad.exit_code == 2 and "--expires-days" in bad.output and bad.stdout.count("ctr_") == 0
    long_name = runner.invoke("create-token", email, "--name", "x" * 101)
    assert long_name.exit_code == 1 and "at most 100 characters" in long_name.output and "ctr_" not in long_name.stdout
    with app.extensions["connector"].db.session() as session:
        session.query(User).filter_by(email=email).one().is_active = False
    inactive = runner.invoke("create-token", email)
    assert inactive.exit_code == 1 and "deactivated" in inactive.output and inactive.stdout == ""


def test_no_token_reaches_the_logs(runner, app, caplog):
    caplog.set_level(logging.DEBUG)
    email = _user(runner)
    result = runner.invoke("create-token", email, "--name", "logged?")
    token = result.stdout.strip()
    runner.invoke("list-tokens", email)
    runner.invoke("revoke-token", "1")
    assert TOKEN.fullmatch(token) and token not in caplog.text and token not in result.stderr
