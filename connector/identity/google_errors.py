"""Google's OAuth errors in plain sentences, each saying what happened and what to do.

Google's token endpoint answers with terse descriptions ("Unauthorized", "Bad Request", "Token has
been expired or revoked."), so the sentence is chosen by the `error` code and, where that is not
enough, by what we know of the sign-in (see `refresh_refused`). Problems Google shows on its own
pages (redirect_uri_mismatch, org_internal, an app in Testing and a user who is no test user) never
reach the app; their fixes are on the "Google app" page instead.
"""
from __future__ import annotations

from dataclasses import dataclass

from .errors import Explained

CONNECT = "click \"Connect Google\" again"
CONSENT_SCREEN = "Google Cloud console > Google Auth Platform (APIs & Services > OAuth consent screen)"
API_CONTROLS = ("Admin console > Security > Access and data control > API controls > Manage third-party app "
                "access")


@dataclass(frozen=True)
class GoogleContext:
    """What the sentences may mention."""
    client_id: str = ""
    callback_url: str = ""
    authority: str = ""
    hosted_domain: str = ""  # the Workspace domain of the mailbox, if known


def _domain(ctx: GoogleContext) -> str:
    return ctx.hosted_domain or "your Google Workspace domain"


def _sign_in_sentences(ctx: GoogleContext) -> dict[str, str]:
    """Errors of the authorization step (sent back to the callback) and of the code exchange."""
    return {
        "access_denied": ("The access was not granted at Google (Cancel, or \"Back to safety\" on the unverified-app "
                          "screen), so no mailbox was connected: " + CONNECT + " and press Continue."),
        "admin_policy_enforced": (f"An admin of {_domain(ctx)} blocks this app (admin_policy_enforced): ask them to "
                                  f"mark it Trusted under {API_CONTROLS}, then {CONNECT}."),
        "org_internal": ("The Google app is Internal to another Workspace organization (org_internal): sign in with "
                         "an account of the organization that owns the Google Cloud project, or make the app "
                         f"External under {CONSENT_SCREEN} > Audience."),
        "consent_required": f"Google needs you to sign in and consent (consent_required): {CONNECT}.",
        "interaction_required": f"Google needs you to choose an account (interaction_required): {CONNECT}.",
        "login_required": f"Google needs you to sign in (login_required): {CONNECT}.",
        "invalid_scope": ("Google refused the permissions connector asks for (invalid_scope: openid, email, "
                          "https://mail.google.com/): check that the Gmail API scope is allowed for the app, then "
                          f"{CONNECT}."),
        "redirect_uri_mismatch": (f"The callback URL {ctx.callback_url or 'of this server'} is not an authorized "
                                  "redirect URI of the Google OAuth client (redirect_uri_mismatch): add it exactly "
                                  "under Credentials > the OAuth client > Authorized redirect URIs."),
        "invalid_grant": ("Google's sign-in answer expired or was used already (invalid_grant), so no mailbox was "
                          f"connected: {CONNECT}."),
    }


def _client_sentences(ctx: GoogleContext) -> dict[str, str]:
    """Errors that concern the OAuth client itself (the "Google app" page)."""
    return {
        "invalid_client": ("Google refused the app's credentials (invalid_client): check the Client ID and paste the "
                           "Client secret again on the Google app page (Google Cloud console > Credentials > the "
                           "OAuth client)."),
        "deleted_client": ("The Google OAuth client was deleted in Google Cloud (deleted_client): restore it, or "
                           "create a new OAuth client (Web application), save it on the Google app page and reconnect "
                           "every Google mailbox."),
        "unauthorized_client": ("Google does not let this OAuth client use this sign-in (unauthorized_client): create "
                                "an OAuth client of type \"Web application\" and save its Client ID and Client secret "
                                "on the Google app page."),
        "disabled_client": ("The Google OAuth client is disabled (disabled_client): enable it in the Google Cloud "
                            "console (Credentials), then try again."),
    }


def explain_google(error: str | None, description: str | None = None,
                   ctx: GoogleContext | None = None) -> Explained:
    """A sentence for an OAuth error of Google's authorization or token endpoint (sign-in and save)."""
    ctx = ctx or GoogleContext()
    error = (error or "").strip()
    known = _sign_in_sentences(ctx) | _client_sentences(ctx)
    if error in known:
        return Explained(known[error])
    if error in {"temporarily_unavailable", "server_error"}:
        return Explained("Google's sign-in service is temporarily unavailable: try again in a few minutes.")
    detail = f" ({error})" if error else ""
    first_line = (description or "").splitlines()[0].strip()[:300] if description else ""
    text = f"Google answered with an error{detail}"
    if first_line:
        text += f": \"{first_line}\""
    return Explained(text + ". Try again; if it persists, check the Google app page.")


# -- a refresh token that no longer works ----------------------------------------------------------------

TESTING_DAYS = 7
DISUSE_DAYS = 183  # "has not been used for six months"


def refresh_refused(error: str, description: str | None, ctx: GoogleContext, *, token_age_days: float,
                    days_valid_after_issue: float, days_unused: float) -> tuple[Explained, str]:
    """(sentence, reason) for an error of the refresh grant; `reason` names the cause for code:
    "revoked", "testing_expired", "disuse", "client_changed", "client_deleted", "admin_policy",
    "client_credentials" or "transient".

    Google answers every dead refresh token the same way (invalid_grant, "Token has been expired or
    revoked."); the cause is read from the token's history: a token that dies once it is 7 days old,
    having never worked past day 7, is what an External app in "Testing" gets; one unused for six
    months dies of disuse; anything else was revoked (by the user or an admin) or ended by a password
    change, which Google does not tell apart.
    """
    if error == "invalid_grant":
        if days_unused >= DISUSE_DAYS:
            return Explained("Google expired the mailbox's sign-in because it was not used for six months "
                             "(invalid_grant): reconnect the mailbox.", None, True), "disuse"
        if token_age_days >= TESTING_DAYS and days_valid_after_issue < TESTING_DAYS:
            return Explained(
                "Google ended the mailbox's sign-in 7 days after it was given (invalid_grant). That is what Google "
                "does to every mailbox of an External app whose OAuth consent screen is still in \"Testing\": its "
                f"refresh tokens expire after 7 days. An admin should publish the app ({CONSENT_SCREEN} > Audience > "
                "Publish app) or, for a Google Workspace domain, make it Internal; then reconnect the mailbox.",
                None, True), "testing_expired"
        return Explained(
            "Google no longer accepts the mailbox's sign-in (invalid_grant): its access was removed (in the Google "
            "Account under Security > Your connections to third-party apps & services, or by a Workspace admin), or "
            "the account's password was changed, which ends Gmail access for every app. Reconnect the mailbox.",
            None, True), "revoked"
    if error == "unauthorized_client":
        return Explained("The mailbox was connected through another Google OAuth client than the one saved on the "
                         "Google app page (unauthorized_client): reconnect the mailbox.", None, True), "client_changed"
    if error == "deleted_client":
        return Explained(_client_sentences(ctx)["deleted_client"], None, True), "client_deleted"
    if error == "admin_policy_enforced":
        return Explained(f"An admin of {_domain(ctx)} now blocks this app (admin_policy_enforced): the mailbox "
                         f"resumes by itself once they mark the app Trusted under {API_CONTROLS}.",
                         None, False), "admin_policy"
    if error in {"invalid_client", "disabled_client"}:
        return Explained(_client_sentences(ctx)[error], None, False), "client_credentials"
    return explain_google(error, description, ctx), "transient"
