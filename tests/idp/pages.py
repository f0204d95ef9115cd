"""HTML pages of the identity provider: sign-in, consent, errors, form_post.

Plain forms with no script and no cookies, so a browser (Playwright) and a plain `requests`
client (tests/idp/driver.py) can both drive them. Element ids copy Microsoft's where a browser
test might look for them (idSIButton9, idBtn_Accept, idBtn_Back).
"""
from __future__ import annotations

from html import escape

_STYLE = """
body{font-family:Segoe UI,Helvetica,Arial,sans-serif;background:#f2f2f2;margin:0}
main{background:#fff;max-width:440px;margin:60px auto;padding:44px;
box-shadow:0 2px 6px rgba(0,0,0,.2)}
h1{font-size:24px;font-weight:600}label{display:block;margin:12px 0}
input[type=email],input[type=password]{width:100%;padding:6px;box-sizing:border-box}
.error{color:#e81123}button{padding:6px 24px;margin:12px 8px 0 0}
"""


def _page(title: str, body: str, status_title: str | None = None) -> str:
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(status_title or title)}</title><style>{_STYLE}</style></head>"
            f"<body><main><div class=\"brand\">Microsoft (test identity provider)</div>"
            f"<h1>{escape(title)}</h1>{body}</main></body></html>")


def sign_in(action: str, rid: str, app_name: str, login_hint: str = "",
            error: str | None = None) -> str:
    """The sign-in form: fields `login` and `passwd`, button "Sign in"."""
    error_html = (f"<div id=\"passwordError\" class=\"error\" role=\"alert\">{escape(error)}</div>"
                  if error else "")
    body = (f"<p>to continue to <span id=\"appName\">{escape(app_name)}</span></p>"
            f"<form method=\"post\" action=\"{escape(action)}\" id=\"signinForm\">"
            f"<input type=\"hidden\" name=\"rid\" value=\"{escape(rid)}\">"
            f"<label>Email, phone, or Skype <input type=\"email\" name=\"login\" id=\"i0116\" "
            f"value=\"{escape(login_hint)}\" autocomplete=\"username\" required></label>"
            f"<label>Password <input type=\"password\" name=\"passwd\" id=\"i0118\" "
            f"autocomplete=\"current-password\"></label>{error_html}"
            f"<button type=\"submit\" id=\"idSIButton9\">Sign in</button></form>")
    return _page("Sign in", body, "Sign in to your account")


def consent(action: str, rid: str, app_name: str, publisher: str, email: str,
            permissions: list[str]) -> str:
    """The consent page: the permissions in words, buttons "Accept" and "Cancel"."""
    items = "".join(f"<li>{escape(p)}</li>" for p in permissions)
    body = (f"<p id=\"account\">{escape(email)}</p>"
            f"<p><strong id=\"appName\">{escape(app_name)}</strong><br>{escape(publisher)}</p>"
            f"<p>This app would like to:</p><ul id=\"permissions\">{items}</ul>"
            "<p>Accepting these permissions means that you allow this app to use your data as "
            "specified in their terms of service and privacy statement.</p>"
            f"<form method=\"post\" action=\"{escape(action)}\" id=\"consentForm\">"
            f"<input type=\"hidden\" name=\"rid\" value=\"{escape(rid)}\">"
            "<button type=\"submit\" name=\"decision\" value=\"cancel\" id=\"idBtn_Back\">Cancel"
            "</button><button type=\"submit\" name=\"decision\" value=\"accept\" "
            "id=\"idBtn_Accept\">Accept</button></form>")
    return _page("Permissions requested", body)


def error(code: int, message: str, correlation_id: str) -> str:
    """An error shown at the IdP (no redirect back to the app)."""
    body = (f"<p class=\"error\" id=\"errorMessage\">AADSTS{code}: {escape(message)}</p>"
            f"<p>Correlation ID: {escape(correlation_id)}</p>")
    return _page("Sorry, but we're having trouble signing you in.", body)


def form_post(action: str, fields: dict[str, str]) -> str:
    """response_mode=form_post: a form a browser posts to the app (the driver reads it)."""
    inputs = "".join(f"<input type=\"hidden\" name=\"{escape(k)}\" value=\"{escape(v)}\">"
                     for k, v in fields.items())
    body = (f"<form method=\"post\" action=\"{escape(action)}\" id=\"formPost\">{inputs}"
            "<noscript><button type=\"submit\">Continue</button></noscript></form>"
            "<script>document.getElementById('formPost').submit()</script>")
    return _page("Working...", body)


def signed_out() -> str:
    return _page("You signed out of your account",
                 "<p>It's a good idea to close all browser windows.</p>")
