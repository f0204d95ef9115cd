"""AADSTS error codes in plain sentences, each saying what happened and what to do.

Microsoft puts the code at the start of `error_description` ("AADSTS65001: The user or
administrator has not consented..."). We never show that text raw: people get a sentence with the
fix, and the code in brackets so an admin can look it up.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

_CODE = re.compile(r"AADSTS(\d+)")


@dataclass(frozen=True)
class Explained:
    message: str
    code: int | None = None
    needs_reconnect: bool = False  # the mailbox's grant is gone: only signing in again helps


@dataclass(frozen=True)
class Context:
    """What the sentences may mention."""
    tenant: str = ""
    client_id: str = ""
    callback_url: str = ""
    authority_host: str = ""
    address: str = ""
    admin_consent_url: str = ""
    extra: dict = field(default_factory=dict)


def aadsts_code(text: str | None) -> int | None:
    match = _CODE.search(text or "")
    return int(match.group(1)) if match else None


_GRANT_GONE = "needs_reconnect"

# code -> (sentence template, needs reconnect)
_SENTENCES: dict[int, tuple[str, bool]] = {
    65001: ("Microsoft says the admin has not consented to IMAP.AccessAsUser.All and SMTP.Send for this tenant "
            "(AADSTS65001): ask an admin to grant consent{admin_consent}, then reconnect.", True),
    65004: ("The permissions were declined at Microsoft (AADSTS65004), so no mailbox was connected: "
            "click \"Connect Microsoft 365\" again and choose Accept.", False),
    50194: ("The app is registered for a single tenant, but the Tenant ID here is \"{tenant}\" (AADSTS50194): "
            "enter the app's Directory (tenant) ID on the Microsoft 365 app page, or make the app multitenant "
            "in Azure (Authentication > Supported account types).", False),
    50020: ("The account you signed in with is not a member of the app's tenant (AADSTS50020): sign in with an "
            "account of that organisation, or make the app multitenant in Azure.", False),
    700016: ("Microsoft does not know the Client ID {client_id} in tenant \"{tenant}\" (AADSTS700016): copy the "
             "Application (client) ID from the app's Overview page in Azure, and check that the Tenant ID is the "
             "app's tenant.", False),
    7000215: ("The client secret is wrong (AADSTS7000215): paste the secret's Value (not its Secret ID) from "
              "Certificates & secrets in Azure, or create a new secret and save it here.", False),
    7000222: ("The client secret has expired (AADSTS7000222): create a new client secret under Certificates & "
              "secrets in Azure and save it on the Microsoft 365 app page.", False),
    90002: ("Microsoft does not know the tenant \"{tenant}\" (AADSTS90002): use the Directory (tenant) ID or a "
            "verified domain of your organisation, or \"organizations\" for a multitenant app.", False),
    900023: ("The Tenant ID \"{tenant}\" is not a valid tenant (AADSTS900023): use the Directory (tenant) ID GUID, "
             "a verified domain, \"organizations\" or \"common\".", False),
    50011: ("The callback URL is not registered for this app (AADSTS50011): add {callback_url} as a redirect URI "
            "of the Web platform in Azure (Authentication), then try again.", False),
    9002325: ("The callback URL is registered as a single-page application (AADSTS9002325): register "
              "{callback_url} under the Web platform in Azure (Authentication) instead.", False),
    9002326: ("The callback URL is registered as a single-page application (AADSTS9002326): register "
              "{callback_url} under the Web platform in Azure (Authentication) instead.", False),
    28000: ("Microsoft refused to issue one token for two different services (AADSTS28000): this is a bug in "
            "connector, please report it.", False),
    500011: ("Microsoft does not find Office 365 Exchange Online in this tenant (AADSTS500011): connect a mailbox "
             "of a Microsoft 365 tenant with Exchange Online, or ask its admin to license Exchange Online.", False),
    50034: ("Microsoft does not know this user account (AADSTS50034): check the address, then reconnect.", True),
    50057: ("The user account is disabled in the directory (AADSTS50057): ask an admin to enable it, then "
            "reconnect.", True),
    50173: ("Microsoft revoked the sign-in, for example after a password change (AADSTS50173): reconnect the "
            "mailbox.", True),
    50076: ("The organisation now requires multi-factor authentication for this sign-in (AADSTS50076): reconnect "
            "the mailbox and complete the MFA prompt.", True),
    50079: ("The user must register for multi-factor authentication (AADSTS50079): complete MFA registration, "
            "then reconnect the mailbox.", True),
    50078: ("The multi-factor authentication has expired (AADSTS50078): reconnect the mailbox.", True),
    70043: ("A sign-in frequency policy of the organisation expired this sign-in (AADSTS70043): reconnect the "
            "mailbox.", True),
    700082: ("The sign-in expired after 90 days without use (AADSTS700082): reconnect the mailbox.", True),
    700084: ("The sign-in expired (AADSTS700084): reconnect the mailbox.", True),
    50133: ("The session became invalid after a password change (AADSTS50133): reconnect the mailbox.", True),
    53003: ("A Conditional Access policy of the organisation blocked the sign-in (AADSTS53003): ask an admin to "
            "allow this app, then reconnect.", True),
    70000: ("Microsoft refused the stored grant (AADSTS70000): reconnect the mailbox.", True),
    70008: ("The authorization code expired before it was used (AADSTS70008): click \"Connect Microsoft 365\" "
            "again.", False),
    9002313: ("Microsoft refused the stored grant as invalid (AADSTS9002313): reconnect the mailbox.", True),
    50126: ("The user name or password is wrong (AADSTS50126): sign in again.", False),
    50058: ("No one is signed in at Microsoft (AADSTS50058): click \"Connect Microsoft 365\" and sign in.", False),
}


def explain(error: str | None, description: str | None = None, ctx: Context | None = None) -> Explained:
    """Turn an OAuth error (and its AADSTS code) into a sentence with the fix."""
    ctx = ctx or Context()
    code = aadsts_code(description) or aadsts_code(error)
    if code in _SENTENCES:
        template, reconnect = _SENTENCES[code]
        admin_consent = f" (an admin can open {ctx.admin_consent_url})" if ctx.admin_consent_url else \
            " (Azure portal > App registrations > API permissions > Grant admin consent)"
        message = template.format(tenant=ctx.tenant or "?", client_id=ctx.client_id or "?",
                                  callback_url=ctx.callback_url or "the callback URL", address=ctx.address,
                                  admin_consent=admin_consent)
        return Explained(message, code, reconnect)
    if error == "access_denied":
        return Explained("Access was denied at Microsoft, so no mailbox was connected: click \"Connect Microsoft 365\" "
                         "again and accept the permissions, or ask an admin to grant them.", code, False)
    if error == "invalid_grant":
        suffix = f" (AADSTS{code})" if code else ""
        return Explained(f"Microsoft no longer accepts the mailbox's sign-in{suffix}: reconnect the mailbox.",
                         code, True)
    if error == "invalid_client":
        suffix = f" (AADSTS{code})" if code else ""
        return Explained(f"Microsoft refused the app's credentials{suffix}: check the Client ID and Client secret on "
                         "the Microsoft 365 app page.", code, False)
    if error in {"temporarily_unavailable", "server_error"}:
        return Explained("Microsoft's sign-in service is temporarily unavailable: try again in a few minutes.",
                         code, False)
    detail = f" (AADSTS{code})" if code else (f" ({error})" if error else "")
    first_line = (description or "").split("\r\n")[0].split("\n")[0].strip()
    if first_line:
        first_line = _CODE.sub("", first_line).lstrip(": ").strip()
    text = f"Microsoft answered with an error{detail}"
    if first_line:
        text += f": \"{first_line[:300]}\""
    return Explained(text + ". Try again; if it persists, check the app registration on the Microsoft 365 app page.",
                     code, False)
