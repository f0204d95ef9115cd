"""Mailboxes: the list (50 a page, searchable by address: mailbox_list.py), connecting through Microsoft,
reconnecting, disconnecting, members, settings.
Google's connect and callback are in google_connect.py; Reconnect sends a Google mailbox there.

Who may do what (see accounts.py): every signed-in user may start a connect; the mailbox's owner and
admins change settings, reconnect, disconnect and manage members (others who see it get 403, those who
do not see it 404). A connect starts with a POST carrying the CSRF token, so no link from another
site can start one.
"""
from __future__ import annotations

import json
import logging
import re
from urllib.parse import urlsplit

from flask import (Blueprint, Flask, abort, flash, make_response, redirect, render_template, request,
                   session as cookie, url_for)
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import EmailField, SelectField, StringField, SubmitField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from .. import accounts, delegation, google_registration, mailbox_list, registration, users
from ..crypto import DecryptionError
from ..identity.errors import Explained, explain
from ..identity.microsoft import STATE_MISMATCH, IdentityError
from ..models import POST_IMPORT_ACTIONS, AccountMember, OutboxItem, User
from ..transport import choice as transports
from ..transport import switch as transport_switch
from . import google_connect, params
from .context import db, runtime
from .security import CSP

log = logging.getLogger(__name__)
bp = Blueprint("accounts", __name__)
FLOW_KEY = "ms_flow"

ACTION_LABELS = {"keep": "Keep the mail unchanged", "mark_read": "Mark it as read",
                 "move": "Move it to a folder", "delete": "Delete it"}
_HOST = re.compile(r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")


class MemberForm(FlaskForm):
    email = EmailField("Agent's email", validators=[DataRequired(), Length(max=320)])
    submit = SubmitField("Add member")


class SettingsForm(FlaskForm):
    folder = StringField("Folder to read", validators=[DataRequired(), Length(max=255)])
    post_import_action = SelectField("After import", choices=[SelectChoice(a, ACTION_LABELS[a]) for a in POST_IMPORT_ACTIONS])
    move_to_folder = StringField("Move to folder", validators=[Length(max=255)])
    submit = SubmitField("Save settings")


SECRET_UNREADABLE = ("The stored client secret cannot be decrypted with the configured encryption key: restore the "
                     "old key (CONNECTOR_ENCRYPTION_KEY or encryption.key in the data folder), or an admin can save "
                     "the client secret again on the Microsoft 365 app page.")
OTHER_USER = ("This sign-in was started by another user of this browser, so it was not used: click \"Connect "
              "Microsoft 365\" again.")


def _https_origin(authority: str) -> str | None:
    parts = urlsplit(authority)
    if parts.scheme != "https" or not _HOST.match(parts.netloc or ""):
        return None  # msal and authlib only talk to https authorities; nothing else is let through
    return f"https://{parts.netloc}"


def connect_csp(authority_host: str, *more_authorities: str) -> str:
    """The app's CSP with the authorities' origins added to form-action, and only those origins.

    A connect form's response redirects to the authority, and Chromium applies form-action to the
    redirect too; without the origin the button would do nothing. Set by the views that render a
    connect form (the app-wide header is only a default, so a view's own CSP wins).
    """
    origins = []
    for authority in (authority_host, *more_authorities):
        origin = _https_origin(authority)
        if origin is not None and origin not in origins:
            origins.append(origin)
    if not origins:
        return CSP
    allowed = " ".join(origins)
    directives = [d.strip() for d in CSP.split(";") if d.strip()]
    changed = [f"{d} {allowed}" if d.split()[0] == "form-action" else d for d in directives]
    if not any(d.split()[0] == "form-action" for d in directives):
        changed.append(f"form-action 'self' {allowed}")
    return "; ".join(changed)


def _with_connect_csp(response, google: bool = False):
    """`google`: the page has the "Connect Google" form (or a Google mailbox's Reconnect), so Google's
    authority is allowed too; otherwise only Microsoft's."""
    settings = runtime().settings
    extra = (settings.google.authority,) if google else ()
    response.headers["Content-Security-Policy"] = connect_csp(settings.microsoft.authority_host, *extra)
    return response


def _registered_identity():
    """(identity or None, None) or (None, an error page). Ends the request's transaction, because the
    identity provider is called next: no transaction (SQLite's write lock) is held meanwhile."""
    session = db()
    try:
        identity = runtime().identity(session)
    except DecryptionError:
        return None, _error_page(SECRET_UNREADABLE, 409)
    session.commit()
    return identity, None


def _error_page(message: str, status: int = 400):
    return render_template("accounts/connect_error.html", message=message), status


@bp.get("/accounts")
@login_required
def index():
    """One page (mailbox_list.PAGE_SIZE rows) of the visible mailboxes, `q` narrowing them by address:
    every query below is bounded by the page, so the page costs the same at 10 or 3,000 mailboxes."""
    session = db()
    rt = runtime()
    listing = mailbox_list.mailbox_page(session, current_user, page=params.page(), q=params.search_text("q"))
    mailboxes = listing.items
    current = registration.view(session, rt.settings)  # without decrypting: a lost key must not break this page
    manageable = {a.id for a in mailboxes if accounts.can_manage(current_user, a)}
    owner_ids = {a.connected_by_id for a in mailboxes if a.connected_by_id is not None}
    owners = {uid: email for uid, email in session.execute(select(User.id, User.email)
                                                          .where(User.id.in_(owner_ids)))} if owner_ids else {}
    members: dict[int, list[User]] = {}
    if manageable:
        rows = session.scalars(select(AccountMember).where(AccountMember.account_id.in_(manageable)))
        for row in rows:
            members.setdefault(row.account_id, []).append(row.user)
    google_app = google_registration.view(session, rt.settings)
    google_registered = google_app is not None and google_app.secret_set
    switchable = [a for a in mailboxes if a.id in manageable and a.transport == "imap" and a.provider == "microsoft"]
    dead_ends = {a.id for a in switchable if transports.is_dead_end(a.last_error)}
    imap_ids = [a.id for a in switchable]
    if imap_ids:  # a reply refused with 535 5.7.139 is the mailbox's dead end too, until it is switched
        dead_ends |= set(session.scalars(select(OutboxItem.account_id).where(
            OutboxItem.account_id.in_(imap_ids), OutboxItem.state.in_(("failed", "queued")),
            OutboxItem.last_error.like(f"%{transports.SMTP_AUTH_OFF}%"))))
    page = render_template("accounts/index.html", mailboxes=mailboxes, listing=listing, back=_back_args(listing),
                           members=members, owners=owners,
                           transports=transports.TRANSPORTS, default_transport=transports.default_transport(session),
                           dead_ends=dead_ends, way_out=transports.WAY_OUT.strip(),
                           manageable=manageable, registered=current is not None and current.secret_set,
                           google_registered=google_registered,
                           member_form=MemberForm(), settings_forms={
                               a.id: SettingsForm(obj=a, prefix=f"a{a.id}") for a in mailboxes if a.id in manageable})
    google_reconnect = any(a.provider == "google" for a in mailboxes if a.id in manageable)
    return _with_connect_csp(make_response(page), google=google_registered or google_reconnect)


def _back_args(listing: mailbox_list.MailboxPage) -> dict[str, str]:
    """The page and search the row forms came from (hidden fields), so an action returns to them."""
    back = {}
    if listing.q:
        back["back_q"] = listing.q
    if listing.page > 1:
        back["back_page"] = str(listing.page)
    return back


def _back():
    """Redirect to the Mailboxes page the form was on (its page and search), or to the first page.
    The values come from the form's hidden fields and are read as strictly as the query string."""
    q = request.form.get("back_q", "").strip()
    page = request.form.get("back_page", "")
    q = q if q and len(q) <= params.MAX_SEARCH and not params.has_control_characters(q) else None
    page_number = int(page) if params.is_page_number(page) and int(page) > 1 else None
    return redirect(url_for(".index", q=q, page=page_number))


@bp.post("/accounts/connect/microsoft")
@login_required
def connect():
    """Send the browser straight to Microsoft (authorization code flow with PKCE). The CSRF token is
    checked by CSRFProtect before this runs; `mailbox` names a shared mailbox to add as its delegate."""
    try:
        shared = accounts.shared_address_or_none(request.form.get("mailbox"))
    except ValueError as exc:
        return _error_page(f"{exc}: enter the shared mailbox's full address, e.g. support@contoso.com.")
    transport = transports.valid(request.form.get("transport")) or transports.default_transport(db())
    return _start_flow(shared=shared, transport=transport)


@bp.post("/accounts/<int:account_id>/reconnect")
@login_required
def reconnect(account_id: int):
    account = _managed_account(account_id)
    if account.provider == google_connect.PROVIDER:
        return google_connect.start_flow(account)
    shared = account.address if accounts.is_shared(account) else None
    return _start_flow(shared=shared, login_hint=account.token_owner or account.address, account_id=account.id,
                       transport=account.transport)


@bp.post("/accounts/<int:account_id>/transport")
@login_required
def switch_transport(account_id: int):
    """Owner or admin (CSRF-checked): switch between IMAP + SMTP and Microsoft Graph, with the stored sign-in
    when it has the consent, else through a new sign-in that asks for the new transport's permissions."""
    account = _managed_account(account_id)
    transport = transports.valid(request.form.get("transport"))
    if transport is None or account.provider != "microsoft":
        abort(400, "Choose the transport: imap or graph (Microsoft 365 mailboxes only).")
    if transport == account.transport:
        flash(f"{account.address} already uses {transports.TRANSPORTS[transport]}.", "info")
        return _back()
    switched, _ = transport_switch.try_switch(db(), runtime(), account, transport)
    if not switched:
        shared = account.address if accounts.is_shared(account) else None
        return _start_flow(shared=shared, login_hint=account.token_owner or account.address, account_id=account.id,
                           transport=transport)
    requeued = transport_switch.requeue_dead_ends(db(), account) if transport == "graph" else 0
    db().commit()
    log.info("mailbox %s switched to %s by %s", account.address, transport, current_user.email)
    runtime().wakeup.set()
    flash(f"{account.address} now uses {transports.TRANSPORTS[transport]}."
          + (f" {requeued} failed repl{'y goes' if requeued == 1 else 'ies go'} out again." if requeued else ""),
          "success")
    return _back()


def _start_flow(*, shared: str | None, login_hint: str | None = None, account_id: int | None = None,
                transport: str = "imap"):
    rt = runtime()
    identity, problem = _registered_identity()
    if problem is not None:
        return problem
    if identity is None:
        hint = " Open Admin > Microsoft 365 app to do it." if current_user.is_admin else " Ask an admin to do it."
        return _error_page("The Microsoft 365 app is not registered yet, so mailboxes cannot be connected." + hint,
                           409)
    try:
        flow = identity.start_connect(rt.settings.callback_url, login_hint=login_hint,
                                      scopes=transports.connect_scopes(transport, bool(shared)))
    except IdentityError as exc:
        return _error_page(exc.explained.message, 502)
    flow.update(connector_shared=shared, connector_account=account_id, connector_user=current_user.id,
                connector_transport=transport)
    cookie[FLOW_KEY] = rt.vault.encrypt(json.dumps(flow)).decode()
    return redirect(flow["auth_uri"])


@bp.get("/auth/microsoft/callback")
@login_required
def callback():
    rt = runtime()
    session = db()
    sealed = cookie.pop(FLOW_KEY, None)
    flow = None
    if sealed:
        try:
            flow = json.loads(rt.vault.decrypt(sealed.encode()))
        except (DecryptionError, ValueError):
            flow = None
    if flow is None or request.args.get("state") != flow.get("state"):
        log.warning("callback refused: state does not match a sign-in started in this session")
        return _error_page(STATE_MISMATCH)
    shared = flow.pop("connector_shared", None)
    reconnect_id = flow.pop("connector_account", None)
    transport = transports.valid(flow.pop("connector_transport", None)) or "imap"
    if flow.pop("connector_user", None) != current_user.id:
        log.warning("callback refused: the sign-in was started by another user")
        return _error_page(OTHER_USER)
    identity, problem = _registered_identity()
    if problem is not None:
        return problem
    if identity is None:
        return _error_page("The Microsoft 365 app registration was removed during the sign-in: ask an admin.", 409)
    if "error" in request.args:
        explained = _explain_callback_error(identity, request.args)
        log.info("connect ended with %s (AADSTS%s)", request.args.get("error"), explained.code)
        return _error_page(explained.message)
    try:
        connected = identity.finish_connect(flow, request.args.to_dict(),
                                            scopes=transports.connect_scopes(transport, bool(shared)))
        if shared:
            _prove_access(identity, connected, shared, transport)
    except IdentityError as exc:
        return _error_page(exc.explained.message)
    except delegation.AccessRefused as exc:
        return _error_page(str(exc), 403)
    try:
        result = _store_connection(connected, shared, reconnect_id)
    except accounts.ConnectRefused as exc:
        session.rollback()
        return _error_page(str(exc), 403)
    if result.outcome != "joined" and result.account.transport != transport:
        transport_switch.apply(result.account, transport)
        if transport == "graph":
            transport_switch.requeue_dead_ends(session, result.account)
        session.commit()
    rt.wakeup.set()
    flash(_connected_message(result), "success" if result.outcome != "joined" else "info")
    return redirect(url_for(".index"))


def _prove_access(identity, connected, shared: str, transport: str = "imap") -> None:
    """The delegate's fresh token must open the shared mailbox before anything is stored (see delegation.py)."""
    rt = runtime()
    session = db()
    folder = accounts.folder_to_prove(session, shared)
    session.commit()  # no transaction is held across the IMAP sign-in
    if transport == "graph":
        from ..transport.graph_open import prove_shared_access
        return prove_shared_access(rt, identity, connected, shared, folder)
    token, _ = identity.mail_token(connected.token_cache, connected.home_account_id)
    ms = rt.settings.microsoft
    delegation.prove_full_access(ms.imap_host, ms.imap_port, rt.settings.ca_bundle, shared=shared,
                                 delegate=connected.username, token=token, folder=folder)


def _store_connection(connected, shared: str | None, reconnect_id: int | None) -> accounts.Connection:
    """accounts.connect, committed; raises ConnectRefused. A shared mailbox arrives here proven."""
    return accounts.connect_committed(db(), lambda: accounts.connect(
        db(), runtime().vault, current_user, connected, shared_address=shared, access_proven=bool(shared),
        reconnect_id=reconnect_id))


def _connected_message(result: accounts.Connection) -> str:
    address = result.account.address
    if result.outcome == "created":
        return f"{address} is connected."
    if result.outcome == "reconnected":
        return f"{address} is reconnected."
    owner = db().get(User, result.account.connected_by_id) if result.account.connected_by_id else None
    by = f" by {owner.email}" if owner else ""
    return (f"{address} is already connected{by}; you proved your access and can see its tickets. Only its "
            "owner or an admin can reconnect it or change its settings.")


def _explain_callback_error(identity, args) -> Explained:
    return explain(args.get("error"), args.get("error_description"), identity.context())


def _account_or_404(account_id: int):
    account = accounts.get_visible_account(db(), current_user, account_id)
    if account is None:
        abort(404, "No such mailbox, or it is not yours.")
    return account


def _managed_account(account_id: int):
    """The mailbox if the user may manage it: 404 if they do not see it, 403 if they are only a member."""
    account = _account_or_404(account_id)
    if not accounts.can_manage(current_user, account):
        abort(403, f"Only the owner of {account.address} or an admin can do this; members read and answer its "
                   "tickets.")
    return account


@bp.post("/accounts/<int:account_id>/disconnect")
@login_required
def disconnect(account_id: int):
    account = _managed_account(account_id)
    revoked, not_revoked = False, None
    if account.provider == google_connect.PROVIDER:  # Google's grant ends too (Microsoft's has no revocation)
        revoked, not_revoked = google_connect.revoke_at_google(account)
    accounts.disconnect(db(), account, current_user)
    db().commit()
    at_google = " and its access at Google is revoked" if revoked else ""
    flash(f"{account.address} is disconnected: its tokens are deleted{at_google}, its tickets stay.", "info")
    if not_revoked:
        flash(not_revoked, "error")
    return _back()


@bp.post("/accounts/<int:account_id>/members")
@login_required
def add_member(account_id: int):
    account = _managed_account(account_id)
    form = MemberForm()
    if not form.validate_on_submit():
        flash("Enter the email of a user to add.", "error")
        return _back()
    user = users.find_user(db(), form.email.data)
    if user is None or not user.is_active:
        flash(f"No active user {form.email.data}: add them under Admin > Users first.", "error")
    elif user.is_admin:
        flash(f"{user.email} is an admin: admins see every mailbox already.", "info")
    elif account.connected_by_id == user.id:
        flash(f"{user.email} owns {account.address} already.", "info")
    elif accounts.add_member(db(), account, user):
        db().commit()
        log.info("mailbox %s: %s added member %s", account.address, current_user.email, user.email)
        flash(f"{user.email} can now see the tickets of {account.address}.", "success")
    else:
        flash(f"{user.email} is a member of {account.address} already.", "info")
    return _back()


@bp.post("/accounts/<int:account_id>/members/<int:user_id>/remove")
@login_required
def remove_member(account_id: int, user_id: int):
    account = _managed_account(account_id)
    user = db().get(User, user_id)
    if accounts.remove_member(db(), account, user_id):
        db().commit()
        log.info("mailbox %s: %s removed member %s", account.address, current_user.email, user.email if user else user_id)
        flash(f"{user.email if user else 'The member'} can no longer see the tickets of {account.address}.", "success")
    return _back()


@bp.post("/accounts/<int:account_id>/settings")
@login_required
def settings(account_id: int):
    account = _managed_account(account_id)
    form = SettingsForm(prefix=f"a{account.id}")
    if form.validate_on_submit():
        if form.post_import_action.data == "move" and not form.move_to_folder.data.strip():
            flash("Name the folder to move imported mail to.", "error")
            return _back()
        account.folder = form.folder.data.strip()
        account.post_import_action = form.post_import_action.data
        account.move_to_folder = form.move_to_folder.data.strip()
        db().commit()
        runtime().wakeup.set()
        flash(f"Settings of {account.address} saved.", "success")
    else:
        flash("The settings were not saved: " + "; ".join(e for errs in form.errors.values() for e in errs), "error")
    return _back()


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    google_connect.init_app(app)
