"""Sign in and out with email and password."""
from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, Flask, flash, redirect, render_template, request, url_for
from flask_login import current_user, login_required, login_user, logout_user
from flask_wtf import FlaskForm
from wtforms import EmailField, PasswordField, SubmitField
from wtforms.validators import DataRequired, EqualTo, Length

from .. import users
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
                                    runtime().settings.app.max_login_failures)
        session.commit()
        if result.user is not None:
            login_user(result.user)
            return redirect(_safe_next(request.args.get("next")))
        flash(result.error, "error")
        status = 429 if result.retry_after else 401
    elif request.method == "POST":
        status = 400
    return render_template("auth/login.html", form=form), status


@bp.post("/logout")
@login_required
def logout():
    logout_user()
    flash("Signed out.", "info")
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
        try:
            users.change_password(current_user, form.current.data, form.new.data)
        except users.UserError as exc:
            form.new.errors.append(str(exc).capitalize() + ".")
            status = 400
        else:
            db().commit()
            flash("Password changed.", "success")
            return redirect(url_for("tickets.index"))
    elif form.is_submitted():
        status = 400
    return render_template("auth/password.html", form=form), status


@bp.get("/")
def home():
    return redirect(url_for("tickets.index") if current_user.is_authenticated else url_for("auth.login"))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
