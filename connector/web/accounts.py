"""Mailboxes: the list, connecting through Microsoft, reconnecting, disconnecting, members, settings."""
from __future__ import annotations

import json
import logging

from flask import Blueprint, Flask, abort, flash, redirect, render_template, request, session as cookie, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import EmailField, SelectField, StringField, SubmitField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from .. import accounts, registration, users
from ..crypto import DecryptionError
from ..identity.errors import Explained, explain
from ..identity.microsoft import STATE_MISMATCH, IdentityError
from ..models import POST_IMPORT_ACTIONS, AccountMember
from .context import db, runtime

log = logging.getLogger(__name__)
bp = Blueprint("accounts", __name__)
FLOW_KEY = "ms_flow"

ACTION_LABELS = {"keep": "Keep the mail unchanged", "mark_read": "Mark it as read",
                 "move": "Move it to a folder", "delete": "Delete it"}


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
    session = db()
    rt = runtime()
    mailboxes = accounts.visible_accounts(session, current_user)
    current = registration.view(session, rt.settings)  # without decrypting: a lost key must not break this page
    members = {}
    if current_user.is_admin:
        for row in session.scalars(select(AccountMember)):
            members.setdefault(row.account_id, []).append(row.user.email)
    return render_template("accounts/index.html", mailboxes=mailboxes, members=members,
                           registered=current is not None and current.secret_set,
                           member_form=MemberForm(), settings_forms={
                               a.id: SettingsForm(obj=a, prefix=f"a{a.id}") for a in mailboxes})


@bp.get("/accounts/connect/microsoft")
@login_required
def connect():
    """Send the browser straight to Microsoft (authorization code flow with PKCE)."""
    rt = runtime()
    try:
        shared = accounts.shared_address_or_none(request.args.get("mailbox"))
    except ValueError as exc:
        return _error_page(f"{exc}: enter the shared mailbox's full address, e.g. support@contoso.com.")
    login_hint = request.args.get("login_hint") or None
    identity, problem = _registered_identity()
    if problem is not None:
        return problem
    if identity is None:
        hint = " Open Admin > Microsoft 365 app to do it." if current_user.is_admin else " Ask an admin to do it."
        return _error_page("The Microsoft 365 app is not registered yet, so mailboxes cannot be connected." + hint,
                           409)
    try:
        flow = identity.start_connect(rt.settings.callback_url, login_hint=login_hint)
    except IdentityError as exc:
        return _error_page(exc.explained.message, 502)
    flow["connector_shared"] = shared
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
    identity, problem = _registered_identity()
    if problem is not None:
        return problem
    if identity is None:
        return _error_page("The Microsoft 365 app registration was removed during the sign-in: ask an admin.", 409)
    shared = flow.pop("connector_shared", None)
    if "error" in request.args:
        explained = _explain_callback_error(identity, request.args)
        log.info("connect ended with %s (AADSTS%s)", request.args.get("error"), explained.code)
        return _error_page(explained.message)
    try:
        connected = identity.finish_connect(flow, request.args.to_dict())
    except IdentityError as exc:
        return _error_page(exc.explained.message)
    account, created = accounts.connect(session, rt.vault, current_user, connected, shared)
    session.commit()
    rt.wakeup.set()
    flash(f"{account.address} is connected." if created else f"{account.address} is reconnected.", "success")
    return redirect(url_for(".index"))


def _explain_callback_error(identity, args) -> Explained:
    return explain(args.get("error"), args.get("error_description"), identity.context())


def _account_or_404(account_id: int):
    account = accounts.get_visible_account(db(), current_user, account_id)
    if account is None:
        abort(404, "No such mailbox, or it is not yours.")
    return account


@bp.get("/accounts/<int:account_id>/reconnect")
@login_required
def reconnect(account_id: int):
    account = _account_or_404(account_id)
    args = {"login_hint": account.token_owner or account.address}
    if account.token_owner and account.token_owner != account.address:
        args["mailbox"] = account.address
    return redirect(url_for(".connect", **args))


@bp.post("/accounts/<int:account_id>/disconnect")
@login_required
def disconnect(account_id: int):
    account = _account_or_404(account_id)
    form = FlaskForm()
    if not form.validate_on_submit():
        abort(400)
    accounts.disconnect(db(), account, current_user)
    db().commit()
    flash(f"{account.address} is disconnected: its tokens are deleted, its tickets stay.", "info")
    return redirect(url_for(".index"))


@bp.post("/accounts/<int:account_id>/members")
@login_required
def add_member(account_id: int):
    if not current_user.is_admin:
        abort(403, "Only admins manage members.")
    account = _account_or_404(account_id)
    form = MemberForm()
    if form.validate_on_submit():
        user = users.find_user(db(), form.email.data)
        if user is None:
            flash(f"No user {form.email.data}: add them under Admin > Users first.", "error")
        elif db().get(AccountMember, (account.id, user.id)) is None:
            db().add(AccountMember(account_id=account.id, user_id=user.id))
            db().commit()
            flash(f"{user.email} can now see the tickets of {account.address}.", "success")
    return redirect(url_for(".index"))


@bp.post("/accounts/<int:account_id>/members/<int:user_id>/remove")
@login_required
def remove_member(account_id: int, user_id: int):
    if not current_user.is_admin:
        abort(403, "Only admins manage members.")
    form = FlaskForm()
    if not form.validate_on_submit():
        abort(400)
    row = db().get(AccountMember, (account_id, user_id))
    if row is not None:
        db().delete(row)
        db().commit()
    return redirect(url_for(".index"))


@bp.post("/accounts/<int:account_id>/settings")
@login_required
def settings(account_id: int):
    account = _account_or_404(account_id)
    form = SettingsForm(prefix=f"a{account.id}")
    if form.validate_on_submit():
        if form.post_import_action.data == "move" and not form.move_to_folder.data.strip():
            flash("Name the folder to move imported mail to.", "error")
            return redirect(url_for(".index"))
        account.folder = form.folder.data.strip()
        account.post_import_action = form.post_import_action.data
        account.move_to_folder = form.move_to_folder.data.strip()
        db().commit()
        runtime().wakeup.set()
        flash(f"Settings of {account.address} saved.", "success")
    else:
        flash("The settings were not saved: " + "; ".join(e for errs in form.errors.values() for e in errs), "error")
    return redirect(url_for(".index"))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
