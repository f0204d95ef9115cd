"""Agents' ticket pages: the list (live), one ticket's thread, mail bodies, attachments, status."""
from __future__ import annotations

from flask import Blueprint, Flask, Response, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user, login_required
from flask_wtf import FlaskForm
from sqlalchemy import select
from flask_wtf.file import MultipleFileField
from wtforms import SelectField, StringField, SubmitField, TextAreaField
from wtforms.fields.choices import SelectChoice
from wtforms.validators import DataRequired, Length

from .. import accounts, outbox, tickets
from ..mail.compose import ComposeError, OutgoingFile
from ..mail.html import sanitize_html, text_to_html
from ..blobs import read_blob
from ..models import TICKET_STATUSES, Article, Attachment
from .context import db, readable_ticket, runtime

bp = Blueprint("tickets", __name__)

# The mail body is shown in a sandboxed frame (no scripts, no same-origin) under its own policy.
BODY_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:{remote}; font-src data:; " \
           "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"


class StatusForm(FlaskForm):
    status = SelectField("Status", choices=[SelectChoice(s, s.capitalize()) for s in TICKET_STATUSES])
    submit = SubmitField("Set status")


class ReplyForm(FlaskForm):
    body = TextAreaField("Reply", validators=[DataRequired(), Length(max=1_000_000)])
    cc = StringField("Cc", validators=[Length(max=2000)])
    files = MultipleFileField("Attachments")
    submit = SubmitField("Send reply")


class NewTicketForm(FlaskForm):
    account = SelectField("From mailbox", coerce=int)
    to = StringField("To", validators=[DataRequired(), Length(max=2000)])
    cc = StringField("Cc", validators=[Length(max=2000)])
    subject = StringField("Subject", validators=[DataRequired(), Length(max=500)])
    body = TextAreaField("Message", validators=[DataRequired(), Length(max=1_000_000)])
    files = MultipleFileField("Attachments")
    submit = SubmitField("Send")


def uploaded_files(field) -> list[OutgoingFile]:
    files = []
    for storage in field.data or []:
        if storage and storage.filename:
            files.append(OutgoingFile(storage.filename, storage.mimetype or "application/octet-stream",
                                      storage.read()))
    return files


def _filters() -> dict:
    status = request.args.get("status") or None
    if status not in (None, *TICKET_STATUSES):
        status = None
    return {"status": status, "account": request.args.get("account") or None, "q": request.args.get("q") or None}


@bp.get("/tickets")
@login_required
def index():
    filters = _filters()
    page = request.args.get("page", 1, type=int)
    result = tickets.search_tickets(db(), current_user, page=page, **filters)
    mailboxes = accounts.visible_accounts(db(), current_user)
    template = "tickets/_rows.html" if request.args.get("partial") else "tickets/index.html"
    return render_template(template, page=result, filters=filters, mailboxes=mailboxes, statuses=TICKET_STATUSES)


def _ticket_or_404(ticket_id: int):
    ticket = readable_ticket(current_user, ticket_id)
    if ticket is None:
        abort(404, "No such ticket, or it belongs to a mailbox you are not a member of.")
    return ticket


@bp.get("/tickets/<int:ticket_id>")
@login_required
def show(ticket_id: int):
    ticket = _ticket_or_404(ticket_id)
    form = StatusForm(status=ticket.status)
    reply_form = ReplyForm()
    if not reply_form.body.data:
        reply_form.body.data = outbox.reply_quote(ticket)
    return render_template("tickets/show.html", ticket=ticket, status_form=form, reply_form=reply_form,
                           text_to_html=text_to_html)


@bp.post("/tickets/<int:ticket_id>/reply")
@login_required
def reply(ticket_id: int):
    ticket = _ticket_or_404(ticket_id)
    form = ReplyForm()
    if form.validate_on_submit():
        try:
            outbox.queue_reply(db(), ticket, current_user, form.body.data, form.cc.data or "",
                               uploaded_files(form.files))
        except (ComposeError, ValueError) as exc:
            db().rollback()
            flash(f"The reply was not sent: {exc}", "error")
        else:
            db().commit()
            runtime().wakeup.set()
            flash("Reply queued; it goes out in a moment.", "success")
            return redirect(url_for(".show", ticket_id=ticket.id) + "#reply")
    else:
        flash("The reply was not sent: " + "; ".join(e for errs in form.errors.values() for e in errs), "error")
    return redirect(url_for(".show", ticket_id=ticket.id))


@bp.post("/tickets/<int:ticket_id>/articles/<int:article_id>/retry")
@login_required
def retry(ticket_id: int, article_id: int):
    article = _article_or_404(ticket_id, article_id)
    form = FlaskForm()
    if form.validate_on_submit() and article.outbox is not None:
        outbox.retry(db(), article.outbox)
        db().commit()
        runtime().wakeup.set()
        flash("Queued again.", "success")
    return redirect(url_for(".show", ticket_id=ticket_id) + f"#article-{article_id}")


@bp.route("/tickets/new", methods=["GET", "POST"])
@login_required
def new():
    mailboxes = [a for a in accounts.visible_accounts(db(), current_user) if a.status != "disabled"]
    form = NewTicketForm()
    form.account.choices = [SelectChoice(a.id, a.address) for a in mailboxes]
    if form.validate_on_submit():
        account = next((a for a in mailboxes if a.id == form.account.data), None)
        if account is None:
            abort(403)
        try:
            ticket = outbox.open_outgoing_ticket(db(), account, current_user, form.to.data, form.subject.data,
                                                 form.body.data, form.cc.data or "", uploaded_files(form.files))
        except (ComposeError, ValueError) as exc:
            db().rollback()
            flash(f"The mail was not sent: {exc}", "error")
        else:
            db().commit()
            runtime().wakeup.set()
            flash("Mail queued; it goes out in a moment.", "success")
            return redirect(url_for(".show", ticket_id=ticket.id))
    return render_template("tickets/new.html", form=form, has_mailboxes=bool(mailboxes))


@bp.post("/tickets/<int:ticket_id>/status")
@login_required
def set_status(ticket_id: int):
    ticket = _ticket_or_404(ticket_id)
    form = StatusForm()
    if form.validate_on_submit():
        tickets.set_status(ticket, form.status.data)
        db().commit()
        flash(f"Ticket {tickets.ticket_tag(ticket.number)} is now {ticket.status}.", "success")
    return redirect(url_for(".show", ticket_id=ticket.id))


def _article_or_404(ticket_id: int, article_id: int) -> Article:
    ticket = _ticket_or_404(ticket_id)
    article = next((a for a in ticket.articles if a.id == article_id), None)
    if article is None:
        abort(404)
    return article


@bp.get("/tickets/<int:ticket_id>/articles/<int:article_id>/body")
@login_required
def article_body(ticket_id: int, article_id: int):
    """The sanitised HTML of one mail, for the sandboxed frame; remote images only when asked."""
    article = _article_or_404(ticket_id, article_id)
    allow_remote = request.args.get("images") == "1"
    by_cid = {(a.content_id or "").strip("<>"): a.id for a in article.attachments if a.content_id}

    def cid_url(cid: str) -> str | None:
        attachment_id = by_cid.get(cid.strip("<>"))
        return url_for(".attachment", ticket_id=ticket_id, attachment_id=attachment_id, inline=1) \
            if attachment_id else None

    if article.body_html:
        clean = sanitize_html(article.body_html, allow_remote_images=allow_remote, cid_url=cid_url)
        html, blocked = clean.html, clean.blocked_remote_images
    else:
        html, blocked = text_to_html(article.body_text or ""), 0
    page = render_template("tickets/body.html", html=html)
    response = Response(page, mimetype="text/html")
    response.headers["Content-Security-Policy"] = BODY_CSP.format(remote=" https: http:" if allow_remote else "")
    response.headers["X-Blocked-Remote-Images"] = str(blocked)
    return response


@bp.get("/tickets/<int:ticket_id>/articles/<int:article_id>/blocked")
@login_required
def article_blocked(ticket_id: int, article_id: int):
    article = _article_or_404(ticket_id, article_id)
    if not article.body_html:
        return jsonify(blocked=0)
    return jsonify(blocked=sanitize_html(article.body_html).blocked_remote_images)


@bp.get("/tickets/<int:ticket_id>/attachments/<int:attachment_id>")
@login_required
def attachment(ticket_id: int, attachment_id: int):
    ticket = _ticket_or_404(ticket_id)
    row = db().scalar(select(Attachment).join(Article).where(Attachment.id == attachment_id,
                                                              Article.ticket_id == ticket.id))
    if row is None:
        abort(404)
    data = read_blob(db(), row.blob_sha256)
    if data is None:
        abort(404, "The bytes of this attachment are missing from the blob folder; restore it from a backup.")
    inline_image = request.args.get("inline") == "1" and row.content_type in {
        "image/png", "image/jpeg", "image/gif", "image/webp"}
    response = Response(data, mimetype=row.content_type if inline_image else "application/octet-stream")
    disposition = "inline" if inline_image else "attachment"
    from werkzeug.http import dump_options_header  # RFC 6266 / 5987 encoding of any file name

    response.headers["Content-Disposition"] = dump_options_header(disposition, {"filename": row.filename})
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response.headers["Cache-Control"] = "private, max-age=3600"
    return response


@bp.get("/tickets/<int:ticket_id>/raw/<int:article_id>")
@login_required
def raw(ticket_id: int, article_id: int):
    article = _article_or_404(ticket_id, article_id)
    data = read_blob(db(), article.raw_sha256)
    if data is None:
        abort(404, "The original of this mail is not stored (or is missing from the blob folder).")
    response = Response(data, mimetype="application/octet-stream")
    response.headers["Content-Disposition"] = f'attachment; filename="ticket-{ticket_id}-article-{article_id}.eml"'
    return response


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
