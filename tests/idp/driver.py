"""Drive the IdP's sign-in and consent pages with `requests`, for tests that need no browser.

It behaves like a user at a browser: follow the IdP's redirects, fill in the sign-in form, press
Accept or Cancel, and stop at the first redirect that leaves the IdP (the app's callback), which
is returned unfollowed so the test hands it to the app itself.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit

import requests


class AuthorizationError(Exception):
    """The IdP kept the user on its pages: an error page, or a refused sign-in."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        match = re.search(r"AADSTS(\d+)", message)
        self.code: int | None = int(match.group(1)) if match else None


@dataclass
class _Form:
    attrs: dict[str, str]
    fields: dict[str, str] = field(default_factory=dict)
    buttons: dict[str, str] = field(default_factory=dict)  # value -> name


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.forms: list[_Form] = []
        self.errors: list[str] = []
        self._error_depth = 0
        self._depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag in ("p", "div", "span"):
            self._depth += 1
            if self._error_depth == 0 and "error" in a.get("class", "").split():
                self._error_depth = self._depth
                self.errors.append("")
        if tag == "form":
            self.forms.append(_Form(a))
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1].fields[a["name"]] = a.get("value", "")
        elif tag == "button" and self.forms and a.get("name"):
            self.forms[-1].buttons[a.get("value", "")] = a["name"]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("p", "div", "span"):
            if self._depth == self._error_depth:
                self._error_depth = 0
            self._depth -= 1

    def handle_data(self, data: str) -> None:
        if self._error_depth:
            self.errors[-1] += data


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme, parts.netloc


@dataclass(frozen=True)
class AppResponse:
    """How the IdP hands the result to the app: a redirect (GET url) or a form_post."""

    method: str  # "GET" or "POST"
    url: str  # redirect target (with query/fragment) or the form's action
    params: dict[str, str]  # code/state/... or error/error_description/...

    def as_url(self) -> str:
        if self.method == "GET":
            return self.url
        return f"{self.url}{'&' if '?' in self.url else '?'}{urlencode(self.params)}"


def complete_authorization(authorize_url: str, email: str, password: str, *, consent: bool = True,
                           ca_path: str | Path, timeout: float = 10.0) -> str:
    """Sign in as `email` and Accept (or, with consent=False, Cancel) the consent page.

    Returns the redirect to the app (code and state, or error), unfollowed. If the user already
    consented, the IdP skips the consent page, as Microsoft does. With response_mode=form_post
    the posted fields come back as the query of the form's action URL (see `authorize` for the
    method and fields). Raises AuthorizationError when the IdP shows an error instead (unknown
    client, unregistered redirect URI, wrong password...).
    """
    return authorize(authorize_url, email, password, consent=consent, ca_path=ca_path,
                     timeout=timeout).as_url()


def authorize(authorize_url: str, email: str, password: str, *, consent: bool = True,
              ca_path: str | Path, timeout: float = 10.0) -> AppResponse:
    """Like complete_authorization, but says whether the app gets a GET or a form POST."""
    idp_origin = _origin(authorize_url)
    with requests.Session() as session:
        session.verify = str(ca_path)
        session.trust_env = False  # REQUESTS_CA_BUNDLE would override verify otherwise
        response = session.get(authorize_url, allow_redirects=False, timeout=timeout)
        signed_in = False
        for _ in range(10):
            if response.is_redirect:
                location = urljoin(response.url, response.headers["Location"])
                if _origin(location) != idp_origin:
                    parts = urlsplit(location)
                    return AppResponse("GET", location,
                                       dict(parse_qsl(parts.query or parts.fragment)))
                response = session.get(location, allow_redirects=False, timeout=timeout)
                continue
            parser = _PageParser()
            parser.feed(response.text)
            error = " ".join(e.strip() for e in parser.errors if e.strip())
            form = parser.forms[0] if parser.forms else None
            if form is None or (error and form.attrs.get("id") != "signinForm"):
                raise AuthorizationError(
                    error or f"unexpected IdP page (HTTP {response.status_code})")
            action = urljoin(response.url, form.attrs.get("action", ""))
            data = dict(form.fields)
            if form.attrs.get("id") == "formPost":
                return AppResponse("POST", action, data)
            if "login" in data:
                if signed_in:
                    raise AuthorizationError(error or "sign-in refused")
                data.update(login=email, passwd=password)
                signed_in = True
            elif form.buttons:
                choice = "accept" if consent else "cancel"
                if choice not in form.buttons:
                    raise AuthorizationError(f"no {choice!r} button on the consent page")
                data[form.buttons[choice]] = choice
            else:
                raise AuthorizationError(f"unexpected form {form.attrs}")
            response = session.post(action, data=data, allow_redirects=False, timeout=timeout)
        raise AuthorizationError("too many steps at the IdP")
