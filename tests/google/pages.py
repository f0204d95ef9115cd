"""HTML of the stand-in's browser pages: account chooser, sign-in, unverified-app warning,
consent, and Google's error page.

Plain forms without script, so Chromium (Playwright) and the `requests` driver (driver.py) both
drive them. Every form has an id and every button a name/value; texts copy Google's screens
where a test or a person might look for them.
"""
from __future__ import annotations

from html import escape

from . import scopes as scope_rules
from .errors import PageError

_STYLE = """
body{font-family:Roboto,Arial,sans-serif;background:#f0f4f9;margin:0;color:#1f1f1f}
main{background:#fff;max-width:480px;margin:48px auto;padding:36px;border-radius:28px}
h1{font-size:24px;font-weight:400}label{display:block;margin:12px 0}
input[type=email],input[type=password]{width:100%;padding:10px;box-sizing:border-box}
.error{color:#b3261e}button{padding:8px 24px;margin:12px 8px 0 0;border-radius:20px}
li{margin:6px 0}
"""


def _page(title: str, body: str) -> str:
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(title)}</title><style>{_STYLE}</style></head><body><main>"
            f"<div class=\"brand\">Google (test stand-in)</div><h1>{escape(title)}</h1>"
            f"{body}</main></body></html>")


def _hidden(rid: str) -> str:
    return f"<input type=\"hidden\" name=\"rid\" value=\"{escape(rid)}\">"


def sign_in(action: str, rid: str, app_name: str, identifier: str = "",
            error: str | None = None) -> str:
    """Email and password on one page (Google splits them in two; one is enough here)."""
    error_html = f"<div class=\"error\" id=\"signinError\" role=\"alert\">{escape(error)}</div>" \
        if error else ""
    body = (f"<p>to continue to <span id=\"appName\">{escape(app_name)}</span></p>"
            f"<form method=\"post\" action=\"{escape(action)}\" id=\"signinForm\">{_hidden(rid)}"
            f"<label>Email or phone <input type=\"email\" name=\"identifier\" id=\"identifierId\" "
            f"value=\"{escape(identifier)}\" autocomplete=\"username\" required></label>"
            f"<label>Enter your password <input type=\"password\" name=\"Passwd\" id=\"password\" "
            f"autocomplete=\"current-password\"></label>{error_html}"
            f"<button type=\"submit\" id=\"signinNext\">Next</button></form>")
    return _page("Sign in with Google", body)


def chooser(action: str, rid: str, app_name: str, accounts: list[str]) -> str:
    buttons = "".join(f"<li><button type=\"submit\" name=\"account\" value=\"{escape(a)}\">"
                      f"{escape(a)}</button></li>" for a in accounts)
    body = (f"<p>to continue to <span id=\"appName\">{escape(app_name)}</span></p>"
            f"<form method=\"post\" action=\"{escape(action)}\" id=\"chooserForm\">{_hidden(rid)}"
            f"<ul id=\"accounts\">{buttons}<li><button type=\"submit\" name=\"account\" value=\"\" "
            f"id=\"useAnotherAccount\">Use another account</button></li></ul></form>")
    return _page("Choose an account", body)


def warning(action: str, rid: str, app_name: str, developer: str, testing: bool) -> str:
    """"Google hasn't verified this app" (https://support.google.com/cloud/answer/7454865)."""
    text = ("You've been given access to an app that's currently being tested. You should only "
            "continue if you know the developer that invited you." if testing else
            "The app is requesting access to sensitive info in your Google Account. Until the "
            f"developer ({developer}) verifies this app with Google, you shouldn't use it.")
    go = "Continue" if testing else f"Go to {app_name} (unsafe)"
    body = (f"<p id=\"warningText\">{escape(text)}</p>"
            f"<form method=\"post\" action=\"{escape(action)}\" id=\"warningForm\">{_hidden(rid)}"
            "<button type=\"submit\" name=\"decision\" value=\"back\" id=\"backToSafety\">"
            "Back to safety</button><button type=\"submit\" name=\"decision\" "
            f"value=\"continue\" id=\"proceed\">{escape(go)}</button></form>")
    return _page("Google hasn't verified this app", body)


def consent(action: str, rid: str, app_name: str, email: str, scopes: list[str]) -> str:
    """Sign-in scopes are plain lines; every other scope is a checkbox, unticked, as on
    Google's granular consent screen (users tick what they allow, or "Select all")."""
    basic = [s for s in scopes if s in scope_rules.SIGN_IN]
    boxes = [s for s in scopes if s not in scope_rules.SIGN_IN]
    lines = "".join(f"<li>{escape(scope_rules.SCOPES[s].text)}</li>" for s in basic)
    ticks = "".join(
        f"<li><label><input type=\"checkbox\" name=\"scope\" value=\"{escape(s)}\"> "
        f"{escape(scope_rules.SCOPES[s].text)}</label></li>" for s in boxes)
    choose = (f"<p>Select what <strong>{escape(app_name)}</strong> can access</p>"
              f"<ul id=\"grantable\">{ticks}</ul>") if boxes else ""
    body = (f"<p id=\"account\">{escape(email)}</p>"
            f"<form method=\"post\" action=\"{escape(action)}\" id=\"consentForm\">{_hidden(rid)}"
            f"<ul id=\"signInScopes\">{lines}</ul>{choose}"
            f"<p>Make sure you trust {escape(app_name)}</p><p>You may be sharing sensitive info "
            "with this site or app. You can always see or remove access in your Google "
            "Account.</p><button type=\"submit\" name=\"decision\" value=\"cancel\" "
            "id=\"cancel\">Cancel</button><button type=\"submit\" name=\"decision\" "
            "value=\"continue\" id=\"submit_approve_access\">Continue</button></form>")
    return _page(f"{app_name} wants access to your Google Account", body)


def error(err: PageError, details: dict[str, str]) -> str:
    """Google's error page, with the "Request details" it shows a developer (no secrets)."""
    rows = "".join(f"<li>{escape(k)}={escape(v)}</li>" for k, v in details.items())
    hint = f"<p id=\"developerHint\">{escape(err.developer_hint)}</p>" if err.developer_hint else ""
    body = (f"<p class=\"error\" id=\"errorCode\">Error {err.status}: {escape(err.code)}</p>"
            f"<p id=\"errorMessage\">{escape(err.message)}</p>{hint}"
            f"<p>Request details</p><ul id=\"requestDetails\">{rows}</ul>")
    return _page(err.title, body)
