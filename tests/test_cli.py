"""The `connector` command as admins and scripts use it (DESIGN.md, "CLI")."""
from __future__ import annotations

import re

import pytest
import requests
from sqlalchemy.engine import make_url

from tests.support.app import PASSWORD, csrf_token, login


def _clean_error(result, message: str) -> None:
    assert result.exit_code == 1, result.output
    assert f"Error: {message}" in result.output
    assert "Traceback" not in result.output


def test_init_prints_where_the_database_is(runner, app_config, tmp_path, database_backend, database_url):
    result = runner.invoke("init")
    assert result.exit_code == 0, result.output
    path = str(tmp_path / "instance" / "connector.db") if database_backend == "sqlite" \
        else make_url(database_url).render_as_string(hide_password=True)
    assert result.stdout.strip() == f"database ready: {path}"
    assert runner.invoke("init").exit_code == 0  # idempotent: migrating a current database is fine


def test_create_user_reads_one_line_of_stdin(runner, app):
    result = runner.invoke("create-user", "Ann@Helpdesk.test", "--role", "admin", "--password-stdin",
                           input="  first line is the password\r\nsecond line is not\n")
    assert result.exit_code == 0, result.output
    assert "created admin ann@helpdesk.test" in result.output
    client = app.test_client()
    assert login(client, "ann@helpdesk.test", "  first line is the password").status_code == 302
    assert "Microsoft 365 app" in client.get("/accounts").get_data(as_text=True)  # an admin
    assert login(app.test_client(), "ann@helpdesk.test", "second line is not").status_code == 401


def test_create_user_defaults_to_agent(runner, app):
    assert runner.invoke("create-user", "bo@helpdesk.test", "--password-stdin", input=PASSWORD + "\n").exit_code == 0
    client = app.test_client()
    login(client, "bo@helpdesk.test")
    assert client.get("/admin/microsoft").status_code == 403


def test_create_user_errors_are_clean_messages(runner, app):
    assert runner.invoke("create-user", "cy@helpdesk.test", "--password-stdin", input=PASSWORD + "\n").exit_code == 0
    _clean_error(runner.invoke("create-user", "CY@helpdesk.test", "--password-stdin", input=PASSWORD + "\n"),
                 "a user cy@helpdesk.test exists already")
    _clean_error(runner.invoke("create-user", "dee@helpdesk.test", "--password-stdin", input="short\n"),
                 "the password must have at least 10 characters")
    _clean_error(runner.invoke("create-user", "not-an-address", "--password-stdin", input=PASSWORD + "\n"),
                 "'not-an-address' is not an email address")
    wrong_role = runner.invoke("create-user", "eve@helpdesk.test", "--role", "root", "--password-stdin",
                               input=PASSWORD + "\n")
    assert wrong_role.exit_code == 2 and "'root' is not one of 'admin', 'agent'" in wrong_role.output
    assert "Traceback" not in wrong_role.output


def test_create_user_prompts_for_the_password_twice(runner, app):
    result = runner.invoke("create-user", "fay@helpdesk.test", input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert PASSWORD not in result.output  # hidden input
    assert login(app.test_client(), "fay@helpdesk.test").status_code == 302


def test_create_token_prints_only_the_token_and_it_works(runner, app):
    runner.invoke("create-user", "gus@helpdesk.test", "--password-stdin", input=PASSWORD + "\n")
    result = runner.invoke("create-token", "gus@helpdesk.test")
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert result.stdout == token + "\n" and re.fullmatch(r"ctr_[A-Za-z0-9_-]{40,}", token)
    client = app.test_client()
    response = client.get("/api/v1/accounts", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200 and response.get_json() == []
    assert client.get("/api/v1/accounts").status_code == 401
    second = runner.invoke("create-token", "gus@helpdesk.test").stdout.strip()
    assert second != token  # a new one each time; both work
    assert client.get("/api/v1/accounts", headers={"Authorization": f"Bearer {second}"}).status_code == 200


def test_create_token_for_an_unknown_user(runner, app):
    result = runner.invoke("create-token", "nobody@helpdesk.test")
    _clean_error(result, "no user nobody@helpdesk.test: create it with 'connector create-user nobody@helpdesk.test'")
    assert result.stdout == ""  # nothing a script could mistake for a token


def test_a_missing_config_file_is_a_clean_error(runner, tmp_path):
    result = runner.invoke("--config", str(tmp_path / "nowhere.toml"), "init")
    _clean_error(result, f"configuration file {tmp_path / 'nowhere.toml'} does not exist")


# -- the installed console script, as a subprocess ---------------------------------------------------------

@pytest.fixture
def cli(live_server):
    """The real `connector` executable with the live server's environment (no server started)."""
    return live_server(start=False)


def test_console_script_create_user_and_token(cli):
    done = cli.cli("create-user", "hal@helpdesk.test", "--role", "agent", "--password-stdin",
                   input=PASSWORD + "\nignored\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""
    token = cli.cli("create-token", "hal@helpdesk.test")
    assert token.returncode == 0, token.stderr
    assert re.fullmatch(r"ctr_[A-Za-z0-9_-]{40,}\n", token.stdout)
    duplicate = cli.cli("create-user", "hal@helpdesk.test", "--password-stdin", input=PASSWORD + "\n")
    assert duplicate.returncode == 1
    assert duplicate.stderr.strip().endswith("Error: a user hal@helpdesk.test exists already")
    assert "Traceback" not in duplicate.stderr
    unknown = cli.cli("create-token", "nobody@helpdesk.test")
    assert unknown.returncode == 1 and unknown.stdout == "" and "Traceback" not in unknown.stderr


def test_a_bad_setting_in_the_environment_is_a_clean_error(cli):
    cli.env["CONNECTOR_WORKER_POLL_INTERVAL_SECONDS"] = "often"
    done = cli.cli("init")
    assert done.returncode == 1
    assert "CONNECTOR_WORKER_POLL_INTERVAL_SECONDS must be a whole number, not 'often'" in done.stderr
    assert "Traceback" not in done.stderr


def test_serve_answers_health_within_seconds_and_stops_on_sigterm(live_server):
    server = live_server(start=False)
    server.create_user("ivy@helpdesk.test", "admin")
    server.start()
    assert server.started_in < 10, server.started_in
    with server.http() as http:
        health = http.get(server.url("/api/v1/health"), timeout=5)
        assert health.status_code == 200 and health.json()["status"] == "ok"
        token = server.create_token("ivy@helpdesk.test")
        assert http.get(server.url("/api/v1/accounts"), timeout=5).status_code == 401
        listed = http.get(server.url("/api/v1/accounts"), headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert listed.status_code == 200 and listed.json() == []
    assert server.stop() == 0
    assert "First run" not in server.logs()  # there was a user already
    assert token not in server.logs()


def _sign_in(http: requests.Session, server, email: str, password: str) -> requests.Response:
    page = http.get(server.url("/login"), timeout=5)
    return http.post(server.url("/login"), data={"email": email, "password": password,
                                                 "csrf_token": csrf_token(page.text)},
                     allow_redirects=False, timeout=5)


def test_first_run_prints_the_admin_credentials_once_and_they_work(live_server):
    server = live_server()  # an empty database
    logs = server.logs()
    assert "First run: created the admin account" in logs
    email = re.search(r"email:\s+(\S+)", logs).group(1)
    password = re.search(r"password:\s+(\S+)", logs).group(1)
    assert email == "admin@localhost" and len(password) >= 12
    with server.http() as http:
        response = _sign_in(http, server, email, password)
        assert response.status_code == 302 and response.headers["Location"] == "/tickets"
        assert http.get(server.url("/admin/microsoft"), timeout=5).status_code == 200
    with server.http() as http:
        assert _sign_in(http, server, email, "not the password").status_code == 401
    server.stop()
    server.start()  # the second start creates nobody
    assert server.logs().count("First run: created the admin account") == 1


def test_data_folder_is_private(tmp_path, monkeypatch):
    from connector.runtime import Runtime

    data = tmp_path / "fresh-data"
    Runtime.create({"app": {"data_dir": str(data)}, "database": {"url": f"sqlite:///{data}/connector.db"}})
    assert (data.stat().st_mode & 0o777) == 0o700
