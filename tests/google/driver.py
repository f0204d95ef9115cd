"""Drive the stand-in's pages with `requests`, for tests that need no browser.

It acts like a person at a browser: follow the stand-in's redirects, pick the account in the
chooser (or "Use another account"), sign in, pass the unverified-app warning, tick the consent
checkboxes and press Continue (or Cancel), and stop at the first redirect that leaves the
stand-in (the app's callback), returned unfollowed so the test hands it to the app.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Iterable
from urllib.parse import parse_qsl, urljoin, urlsplit

import requests

from . import scopes as scope_rules

MAX_STEPS = 12


class AuthorizationError(Exception):
    """The stand-in kept the user on its pages: Google's error page or a refused sign-in.

    `code` is the error of the page ("redirect_uri_mismatch", "admin_policy_enforced", ...),
    `status` its HTTP status; both None for a refused sign-in."""

    def __init__(self, message: str, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass(frozen=True)
class AuthorizationResult:
    url: str  # the redirect to the app, with its query
    params: dict[str, str]  # code, scope, state, iss, ... or error, state, iss
    pages: tuple[str, ...]  # the pages passed: chooser, signin, warning, consent


@dataclass
class _Form:
    attrs: dict[str, str]
    fields: dict[str, str] = field(default_factory=dict)
    checkboxes: list[str] = field(default_factory=list)
    buttons: list[tuple[str, str]] = field(default_factory=list)  # (name, value)


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[_Form] = []
        self.texts: dict[str, str] = {}  # by element id: errorCode, errorMessage, signinError
        self._capture: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if a.get("id") in ("errorCode", "errorMessage", "signinError"):
            self._capture = a["id"]
            self.texts[self._capture] = ""
        if tag == "form":
            self.forms.append(_Form(a))
        elif tag == "input" and self.forms and a.get("name"):
            if a.get("type") == "checkbox":
                self.forms[-1].checkboxes.append(a.get("value", ""))
            else:
                self.forms[-1].fields[a["name"]] = a.get("value", "")
        elif tag == "button" and self.forms and a.get("name"):
            self.forms[-1].buttons.append((a["name"], a.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("p", "div"):
            self._capture = None

    def handle_data(self, data: str) -> None:
        if self._capture:
            self.texts[self._capture] += data


def browser(ca_path: str | Path) -> requests.Session:
    """A `requests` session that trusts the test CA and keeps the stand-in's sign-in cookie,
    like one browser profile: pass it as `session=` to sign in once and see the chooser."""
    session = requests.Session()
    session.verify = str(ca_path)
    session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify otherwise
    return session


def complete_authorization(authorize_url: str, email: str, password: str, *,
                           consent: bool = True, ca_path: str | Path,
                           grant_scopes: Iterable[str] | None = None,
                           accept_unverified: bool = True,
                           session: requests.Session | None = None,
                           timeout: float = 10.0) -> str:
    """Sign in as `email` and Continue (consent=False: Cancel) the consent screen; returns the
    redirect URL to the app (code and state, or error). `grant_scopes` ticks only those
    checkboxes (default: all). Raises AuthorizationError when the stand-in shows an error page
    or refuses the password."""
    return authorize(authorize_url, email, password, consent=consent, ca_path=ca_path,
                     grant_scopes=grant_scopes, accept_unverified=accept_unverified,
                     session=session, timeout=timeout).url


def authorize(authorize_url: str, email: str, password: str, *, consent: bool = True,
              ca_path: str | Path, grant_scopes: Iterable[str] | None = None,
              accept_unverified: bool = True, session: requests.Session | None = None,
              timeout: float = 10.0) -> AuthorizationResult:
    """Like complete_authorization, but also says which pages were passed."""
    origin = urlsplit(authorize_url)[:2]
    http = session or browser(ca_path)
    seen: list[str] = []
    try:
        response = http.get(authorize_url, allow_redirects=False, timeout=timeout)
        for _ in range(MAX_STEPS):
            if response.is_redirect:
                location = urljoin(response.url, response.headers["Location"])
                parts = urlsplit(location)
                if parts[:2] != origin:
                    return AuthorizationResult(location, dict(parse_qsl(parts.query)),
                                               tuple(seen))
                response = http.get(location, allow_redirects=False, timeout=timeout)
                continue
            page, action, data = _answer(response, email, password, consent, grant_scopes,
                                         accept_unverified, seen)
            seen.append(page)
            response = http.post(urljoin(response.url, action), data=data,
                                 allow_redirects=False, timeout=timeout)
        raise AuthorizationError("too many steps at the Google stand-in")
    finally:
        if session is None:
            http.close()


def _answer(response: requests.Response, email: str, password: str, consent: bool,
            grant_scopes: Iterable[str] | None, accept_unverified: bool,
            seen: list[str]) -> tuple[str, str, list[tuple[str, str]]]:
    """(page kind, form action, form data) for the page the stand-in shows."""
    parser = _PageParser()
    parser.feed(response.text)
    if "errorCode" in parser.texts:
        code = parser.texts["errorCode"].split(": ", 1)[-1].strip()
        raise AuthorizationError(f"{parser.texts['errorCode'].strip()}: "
                                 f"{parser.texts.get('errorMessage', '').strip()}",
                                 code, response.status_code)
    forms = {f.attrs.get("id"): f for f in parser.forms}
    if "signinForm" in forms:
        if "signin" in seen:
            raise AuthorizationError(parser.texts.get("signinError", "sign-in refused").strip())
        form = forms["signinForm"]
        data = {**form.fields, "identifier": email, "Passwd": password}
        return "signin", form.attrs["action"], list(data.items())
    if "chooserForm" in forms:
        form = forms["chooserForm"]
        listed = {value.lower() for name, value in form.buttons if value}
        return "chooser", form.attrs["action"], [
            *form.fields.items(), ("account", email if email.lower() in listed else "")]
    if "warningForm" in forms:
        form = forms["warningForm"]
        return "warning", form.attrs["action"], [
            *form.fields.items(), ("decision", "continue" if accept_unverified else "back")]
    if "consentForm" in forms:
        form = forms["consentForm"]
        wanted = set(form.checkboxes) if grant_scopes is None \
            else {scope_rules.canonical(s) for s in grant_scopes}
        ticked = [("scope", s) for s in form.checkboxes if s in wanted]
        return "consent", form.attrs["action"], [
            *form.fields.items(), *(ticked if consent else []),
            ("decision", "continue" if consent else "cancel")]
    raise AuthorizationError(f"unexpected page at the Google stand-in (HTTP "
                             f"{response.status_code})", None, response.status_code)
