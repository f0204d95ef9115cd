"""/account/tokens: people make, list and revoke their own REST API tokens; admins revoke anyone's.

Admins see every user's tokens (never the secrets) and may revoke them: a token leaked from a
colleague's script must be stoppable at once without deactivating the colleague. Nobody makes a token
for someone else here; the CLI, run by whoever runs the server, can.
"""
from __future__ import annotations

import logging

from flask import Blueprint, Flask, abort, flash, redirect, render_template, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from wtforms import SelectField, StringField, SubmitField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from .. import api_tokens
from .context import db, runtime

log = logging.getLogger(__name__)
bp = Blueprint("tokens", __name__, url_prefix="/account/tokens")

EXPIRY_CHOICES = [SelectChoice("7", "in 7 days"), SelectChoice("30", "in 30 days"), SelectChoice("90", "in 90 days"),
                  SelectChoice("365", "in a year"), SelectChoice("never", "never")]


class NewTokenForm(FlaskForm):
    name = StringField("Name", validators=[DataRequired("Give the token a name, e.g. what will use it."),
                                           Length(max=api_tokens.MAX_NAME)])
    expires = SelectField("Expires", choices=EXPIRY_CHOICES, default="90")
    submit = SubmitField("Create token")


@bp.route("", methods=["GET", "POST"])
@login_required
def index():
    form = NewTokenForm()
    status, created = 200, None
    if form.validate_on_submit():
        days = None if form.expires.data == "never" else int(form.expires.data)
        try:
            token, row = api_tokens.create(db(), current_user, form.name.data, days)
        except api_tokens.TokenError as exc:
            db().rollback()
            form.name.errors.append(str(exc).capitalize() + ".")
            status = 400
        else:
            db().commit()
            log.info("API token %s (%s) created by %s", row.id, row.name, current_user.email)
            created = (token, row)  # shown in this answer only (it is no-store), never stored
            form = NewTokenForm(formdata=None)
    elif form.is_submitted():
        status = 400
    others = api_tokens.tokens_of_others(db(), current_user) if current_user.is_admin else None
    return render_template("tokens/index.html", form=form, created=created, state=api_tokens.state,
                           mine=api_tokens.tokens_of(db(), current_user), others=others,
                           api_url=runtime().settings.app.base_url.rstrip("/") + "/api/v1/tickets"), status


@bp.post("/<int:token_id>/revoke")
@login_required
def revoke(token_id: int):
    row = api_tokens.get(db(), token_id)
    if row is None or (row.user_id != current_user.id and not current_user.is_admin):
        abort(404, "No such API token, or it is not yours.")
    label = f"“{row.name}”" if row.name else f"number {row.id}"
    owner = "" if row.user_id == current_user.id else f" of {row.user.email}"
    if api_tokens.revoke(row):
        db().commit()
        log.info("API token %s%s revoked by %s", row.id, owner, current_user.email)
        flash(f"Token {label}{owner} revoked: it stops working at once.", "success")
    else:
        flash(f"Token {label}{owner} was revoked already.", "info")
    return redirect(url_for(".index"))


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
