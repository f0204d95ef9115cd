"""Admin pages: the Microsoft 365 app registration, the Google app, and the people who use connector."""
from __future__ import annotations

from flask import Blueprint, Flask, Response, abort, flash, redirect, render_template, url_for
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from wtforms import DateField, EmailField, PasswordField, SelectField, StringField, SubmitField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length, Optional

from .. import google_registration, registration, users
from ..identity.google import CONNECT_SCOPES as GOOGLE_SCOPES
from ..identity.microsoft import CONNECT_SCOPES, IdentityError
from ..blobs import read_blob
from ..models import Account, ImportFailure, User
from ..transport import choice as transports
from .context import db, runtime
from .security import admin_required

bp = Blueprint("admin", __name__, url_prefix="/admin")

PERMISSIONS = [
    ("Microsoft Graph", "offline_access", "Maintain access to data you have given it access to"),
    ("Microsoft Graph", "openid", "Sign users in"),
    ("Microsoft Graph", "profile", "View users' basic profile"),
    ("Microsoft Graph", "email", "View users' email address"),
    ("Office 365 Exchange Online", "IMAP.AccessAsUser.All", "Read and write access to mailboxes via IMAP"),
    ("Office 365 Exchange Online", "SMTP.Send", "Send emails from mailboxes using SMTP AUTH"),
]


class RegistrationForm(FlaskForm):
    client_id = StringField("Client ID", validators=[DataRequired(), Length(max=100)])
    tenant = StringField("Tenant ID", validators=[DataRequired(), Length(max=255)])
    client_secret = PasswordField("Client secret", validators=[Length(max=500)])
    secret_expires_on = DateField("Secret expires on", validators=[Optional()])
    submit = SubmitField("Save")


class GoogleAppForm(FlaskForm):
    client_id = StringField("Client ID", validators=[DataRequired(), Length(max=255)])
    client_secret = PasswordField("Client secret", validators=[Length(max=500)])
    submit = SubmitField("Save")


class TransportForm(FlaskForm):
    transport = SelectField("Transport for new mailboxes",
                            choices=[SelectChoice(k, v) for k, v in transports.TRANSPORTS.items()])
    submit = SubmitField("Set as default")


class NewUserForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    role = SelectField("Role", choices=[SelectChoice("agent", "Agent"), SelectChoice("admin", "Admin")])
    password = PasswordField("Password", validators=[DataRequired(), Length(min=users.MIN_PASSWORD, max=1000)])
    submit = SubmitField("Add user")


@bp.route("/microsoft", methods=["GET", "POST"])
@admin_required
def microsoft():
    rt = runtime()
    session = db()
    form = RegistrationForm()
    saved, error, status = _save_app(form, lambda: registration.save(
        session, rt.settings, rt.vault, client_id=form.client_id.data, tenant=form.tenant.data,
        client_secret=form.client_secret.data, secret_expires_on=form.secret_expires_on.data, by=current_user.email))
    if saved:
        flash("Saved. Microsoft accepted the app registration.", "success")
        return redirect(url_for(".microsoft"))
    current = registration.view(session, rt.settings)
    if not form.is_submitted() and current is not None:
        form.client_id.data, form.tenant.data = current.client_id, current.tenant
    transport_form = TransportForm(formdata=None, transport=transports.default_transport(session))
    return render_template("admin/microsoft.html", form=form, current=current, error=error,
                           transport_form=transport_form, graph_permissions=transports.GRAPH_PERMISSIONS,
                           graph_scopes=" ".join(["offline_access", "openid", "profile"]
                                                 + transports.connect_scopes("graph", False)),
                           callback_url=rt.settings.callback_url, permissions=PERMISSIONS,
                           scopes=" ".join(["offline_access", "openid", "profile"] + CONNECT_SCOPES),
                           authority_host=rt.settings.microsoft.authority_host), status


def _save_app(form, save) -> tuple[bool, str | None, int]:
    """Save an app registration from a submitted form, checked with its provider first: (saved, the
    provider's refusal in words, HTTP status). A field the provider cannot take gets its error on the form."""
    if not form.validate_on_submit():
        return False, None, 400 if form.is_submitted() else 200
    session = db()
    try:
        save()
    except registration.RegistrationInputError as exc:
        getattr(form, exc.field).errors.append(str(exc))
        return False, None, 400
    except IdentityError as exc:
        session.rollback()
        return False, exc.explained.message, 400
    session.commit()
    return True, None, 200


@bp.route("/google", methods=["GET", "POST"])
@admin_required
def google():
    """The Google OAuth client (Gmail and Google Workspace): saved only once Google accepted it."""
    rt = runtime()
    session = db()
    form = GoogleAppForm()
    saved, error, status = _save_app(form, lambda: google_registration.save(
        session, rt.settings, rt.vault, client_id=form.client_id.data, client_secret=form.client_secret.data,
        by=current_user.email))
    if saved:
        flash("Saved. Google accepted the Client ID and the Client secret.", "success")
        return redirect(url_for(".google"))
    current = google_registration.view(session, rt.settings)
    if not form.is_submitted() and current is not None:
        form.client_id.data = current.client_id
    return render_template("admin/google.html", form=form, current=current, error=error,
                           callback_url=google_registration.callback_url(rt.settings),
                           callback_problem=google_registration.callback_problem(rt.settings),
                           scopes=" ".join(GOOGLE_SCOPES), authority=rt.settings.google.authority), status


@bp.post("/microsoft/transport")
@admin_required
def default_transport():
    """Admins only (CSRF-checked): the transport the connect form proposes for new mailboxes."""
    form = TransportForm()
    if not form.validate_on_submit():
        abort(400, "Choose IMAP and SMTP or Microsoft Graph.")
    transports.set_default_transport(db(), form.transport.data, current_user.email)
    db().commit()
    flash(f"New mailboxes connect with {transports.TRANSPORTS[form.transport.data]} by default.", "success")
    return redirect(url_for(".microsoft"))


@bp.route("/users", methods=["GET", "POST"])
@admin_required
def user_list():
    session = db()
    form = NewUserForm()
    status = 200
    if form.validate_on_submit():
        try:
            user = users.create_user(session, form.email.data, form.password.data, form.role.data)
        except users.UserError as exc:
            form.email.errors.append(str(exc))
            status = 400
        else:
            session.commit()
            flash(f"Added {user.email} as {user.role}.", "success")
            return redirect(url_for(".user_list"))
    elif form.is_submitted():
        status = 400
    people = session.scalars(select(User).order_by(User.email)).all()
    return render_template("admin/users.html", form=form, people=people), status


@bp.get("/quarantine")
@admin_required
def quarantine():
    rows = db().execute(select(ImportFailure, Account.address).join(Account, Account.id == ImportFailure.account_id)
                        .order_by(ImportFailure.quarantined.desc(), ImportFailure.updated_at.desc())).all()
    return render_template("admin/quarantine.html", rows=rows, form=FlaskForm())


def _failure_or_404(failure_id: int) -> ImportFailure:
    row = db().get(ImportFailure, failure_id)
    if row is None:
        abort(404)
    return row


@bp.get("/quarantine/<int:failure_id>/raw")
@admin_required
def quarantine_raw(failure_id: int):
    row = _failure_or_404(failure_id)
    data = read_blob(db(), row.raw_sha256)
    if data is None:
        abort(404, "The raw mail was not kept (it has not failed three times yet).")
    response = Response(data, mimetype="application/octet-stream")
    which = f"uid-{row.uid}" if row.uid is not None else "graph"
    response.headers["Content-Disposition"] = f'attachment; filename="quarantined-{row.id}-{which}.eml"'
    return response


@bp.post("/quarantine/<int:failure_id>/retry")
@admin_required
def quarantine_retry(failure_id: int):
    """Import the mail again on the next pass (after a fix): forget the failure and rewind the mailbox."""
    row = _failure_or_404(failure_id)
    if not FlaskForm().validate_on_submit():
        abort(400)
    account = db().get(Account, row.account_id)
    if row.message_key is not None:  # Graph: its numbers are per pass; list the folder again from its start
        account.last_uid, account.sync_cursor = 0, None  # mails imported before are recognised, not fetched
    elif account.uidvalidity == row.uidvalidity and account.last_uid >= row.uid:
        account.last_uid = row.uid - 1  # the mails after it are recognised by Message-ID
    db().delete(row)
    db().commit()
    runtime().wakeup.set()
    flash(f"{_failed_mail(row)} of {account.address} will be imported again on the next pass.", "success")
    return redirect(url_for(".quarantine"))


def _failed_mail(row: ImportFailure) -> str:
    return f"UID {row.uid}" if row.uid is not None else "The mail"


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
