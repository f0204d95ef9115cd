"""Sign in and out with email and password; change the password.

Password checks are throttled (throttle.py); sessions start fresh and end everywhere (sessions.py)."""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, Flask, flash, make_response, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SubmitField
from wtforms.validators import DataRequired, EqualTo, Length

from .. import users
from . import devices, sessions
from .context import db, runtime

bp = Blueprint("auth", __name__)


class LoginForm(FlaskForm):
    email = EmailField("Email", validators=[DataRequired(), Length(max=320)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1000)])
    submit = SubmitField("Sign in")


def _safe_next(target: str | None) -> str:
    """A path on this site, else the ticket list: browsers read "/\\host" as "//host", and drop tabs."""
    if target and target.startswith("/") and not target.startswith("//") and not urlsplit(target).netloc \
            and "\\" not in target and not any(ord(c) < 32 or ord(c) == 127 for c in target):
        return target
    return url_for("tickets.index")


@bp.route("/login", methods=["GET", "POST"])
def login():
    if current_user.is_authenticated:
        return redirect(_safe_next(request.args.get("next")))
    form = LoginForm()
    status = 200
    if form.validate_on_submit():
        session = db()
        result = users.authenticate(session, form.email.data, form.password.data, request.remote_addr or "?",
                                    runtime().settings.app.max_login_failures, device=devices.read(request))
        session.commit()
        if result.user is not None:
            sessions.start(result.user)
            response = redirect(_safe_next(request.args.get("next")))
            devices.remember(response, request, result.user)
            return response
        flash(result.error, "error")
        status = 429 if result.retry_after else 401
    elif request.method == "POST":
        status = 400
    response = make_response(render_template("auth/login.html", form=form), status)
    if status == 429:
        response.headers["Retry-After"] = str(result.retry_after)
    return response


@bp.post("/logout")
@login_required
def logout():
    """Ends this session and every other copy or browser signed in as this user."""
    users.end_sessions(db(), current_user._get_current_object())
    db().commit()
    sessions.end()
    flash("Signed out, here and in every other browser signed in as you.", "info")
    return redirect(url_for("auth.login"))


class PasswordForm(FlaskForm):
    current = PasswordField("Current password", validators=[DataRequired(), Length(max=1000)])
    new = PasswordField("New password", validators=[DataRequired(), Length(max=1000)])
    confirm = PasswordField("New password again", validators=[DataRequired(), EqualTo("new", "The two new passwords differ.")])
    submit = SubmitField("Change password")


@bp.route("/account/password", methods=["GET", "POST"])
@login_required
def password():
    form = PasswordForm()
    status = 200
    if form.validate_on_submit():
        user = current_user._get_current_object()
        try:
            users.change_password(db(), user, form.current.data, form.new.data, request.remote_addr or "?",
                                  runtime().settings.app.max_login_failures, device=devices.read(request))
        except users.PasswordThrottled as exc:
            db().rollback()
            form.current.errors.append(str(exc))
            status = 429
        except users.UserError as exc:
            db().rollback()
            target = form.current if "current password" in str(exc) else form.new
            target.errors.append(str(exc).capitalize() + ".")
            status = 400
        else:
            db().commit()
            sessions.start(user)  # this browser stays signed in, with the new generation
            flash("Password changed. Every other browser signed in as you was signed out.", "success")
            return redirect(url_for("tickets.index"))
    elif form.is_submitted():
        status = 400
    return render_template("auth/password.html", form=form), status


@bp.get("/")
def home():
    return redirect(url_for("tickets.index") if current_user.is_authenticated else url_for("auth.login"))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
