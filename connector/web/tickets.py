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
from ..mail.filenames import content_disposition, display_filename
from ..mail.sanitize import INLINE_HTML_LIMIT, sanitize_html, text_to_html
from ..blobs import read_blob
from ..models import TICKET_STATUSES, Article, Attachment
from . import article_view, params
from .context import db, readable_ticket, runtime

bp = Blueprint("tickets", __name__)

# A mail body is sanitised HTML shown under its own policy, and sandboxed by the policy itself (not only
# by the <iframe sandbox> of the ticket page), so opening the body's URL directly is sandboxed too:
# no script, no form, no plugin, no navigation of the top page. Links open in a new tab
# (allow-popups), as a normal page (allow-popups-to-escape-sandbox, else the linked site breaks).
# Inside our ticket page's frame the document also keeps its origin (allow-same-origin): the page sizes
# the frame to the mail's height from outside, and inline (cid:) images are our own login-protected
# URLs, which an opaque origin would load without the session cookie. With no script in the frame,
# the origin gives the mail nothing to use. Opened any other way, the body gets an opaque origin.
BODY_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:{remote}; font-src data:; " \
           "frame-ancestors 'self'; base-uri 'none'; form-action 'none'; sandbox {sandbox}"
BODY_SANDBOX = "allow-popups allow-popups-to-escape-sandbox"
BODY_SANDBOX_IN_FRAME = "allow-same-origin " + BODY_SANDBOX


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
            files.append(OutgoingFile(display_filename(storage.filename),
                                      storage.mimetype or "application/octet-stream", storage.read()))
    return files


def _filters() -> dict:
    return {"status": params.choice("status", TICKET_STATUSES), "account": params.mailbox_address("account"),
            "q": params.search_text("q")}


@bp.get("/tickets")
@login_required
def index():
    filters = _filters()
    page = params.page()
    partial = params.flag("partial")
    result = tickets.search_tickets(db(), current_user, page=page, **filters)
    if partial:
        return jsonify(items=[_row_json(t) for t in result.items], next_page=result.next_page,
                       empty="No tickets match these filters." if any(filters.values()) else "No tickets.")
    return render_template("tickets/index.html", page=result, filters=filters, mailboxes=_mailbox_menu(),
                           statuses=TICKET_STATUSES)


MAILBOX_MENU_LIMIT = 50  # more than this, and the filter is a field for the address instead of a menu


def _mailbox_menu() -> list | None:
    """The mailboxes to offer in the filter's menu, or None when there are too many for one (an admin of
    thousands of mailboxes would get them all in every ticket list page)."""
    menu = list(db().scalars(accounts.visible_accounts_query(current_user).limit(MAILBOX_MENU_LIMIT + 1)))
    return menu if len(menu) <= MAILBOX_MENU_LIMIT else None


def _row_json(ticket) -> dict:
    """One row of the live list: plain values, which app.js puts into the page as text."""
    return {"id": ticket.id, "url": url_for(".show", ticket_id=ticket.id), "number": ticket.number,
            "subject": ticket.subject, "customer_name": ticket.customer_name,
            "customer_address": ticket.customer_address, "account": ticket.account.address,
            "status": ticket.status, "article_count": ticket.article_count,
            "updated": ticket.updated_at.strftime("%Y-%m-%d %H:%M"), "updated_at": ticket.updated_at.isoformat()}


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
    views = {article.id: article_view.view(article) for article in ticket.articles}
    return render_template("tickets/show.html", ticket=ticket, status_form=form, reply_form=reply_form, views=views)


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
    status = 200
    if form.is_submitted() and form.account.raw_data and \
            form.account.raw_data[0] not in {str(a.id) for a in mailboxes}:
        abort(404, "No such mailbox, or you are not a member of it (or it is disconnected).")
    if form.validate_on_submit():
        account = next(a for a in mailboxes if a.id == form.account.data)
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
        status = 400
    elif form.is_submitted():
        status = 400
    return render_template("tickets/new.html", form=form, has_mailboxes=bool(mailboxes)), status


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


def _part() -> int | None:
    """The `part` parameter of a mail body: which HTML part of the mail (0, 1, ...); absent: all of its HTML."""
    value = request.args.get("part")
    if value is None:
        return None
    if not (value.isascii() and value.isdigit() and len(value) <= 6):
        raise params.BadParameter("part must be a whole number (which HTML part of the mail), or left out.")
    return int(value)


def _html_of(article: Article, part: int | None) -> tuple[str, str | None]:
    """(HTML, plain text to show instead if the HTML cannot be shown) of one HTML part of the mail, or of
    all its HTML without `part`; 404 for a part it does not have."""
    if part is None:
        return article.body_html or "", None
    model = article_view.model_of(article)
    parts = article_view.html_parts(model) if model is not None else []
    if part >= len(parts):
        abort(404, "This mail has no such part.")

    def piece(text: str, span) -> str:
        try:
            return text[max(0, int(span[0])):max(0, int(span[1]))]
        except (TypeError, ValueError, IndexError):
            return ""
    node = parts[part]
    alt = piece(article.body_text or "", node["alt"]) if node.get("alt") else None
    return piece(article.body_html or "", node.get("r")), alt


@bp.get("/tickets/<int:ticket_id>/articles/<int:article_id>/body")
@login_required
def article_body(ticket_id: int, article_id: int):
    """The sanitised HTML of one mail (or of one of its HTML parts), for a sandboxed frame; remote images
    only when asked."""
    article = _article_or_404(ticket_id, article_id)
    allow_remote = params.flag("images")
    html, alt = _html_of(article, _part())
    by_cid = {(a.content_id or "").strip("<>"): a.id for a in article.attachments if a.content_id}

    def cid_url(cid: str) -> str | None:
        attachment_id = by_cid.get(cid.strip("<>"))
        return url_for(".attachment", ticket_id=ticket_id, attachment_id=attachment_id, inline=1) \
            if attachment_id else None

    blocked = 0
    if html and alt is not None and len(html) > INLINE_HTML_LIMIT:
        page_html = text_to_html(alt)  # too long to show as HTML: the mail's own plain text instead
    elif html:
        clean = sanitize_html(html, allow_remote_images=allow_remote, cid_url=cid_url)
        page_html, blocked = clean.html, clean.blocked_remote_images
        if clean.shown_as_text and alt is not None:
            page_html = text_to_html(alt)  # too complex to sanitise in time: the plain alternative
    else:
        page_html = text_to_html(article.body_text or "") if alt is None else text_to_html(alt)
    page = render_template("tickets/body.html", html=page_html)
    response = Response(page, mimetype="text/html")
    # Sec-Fetch-Dest is set by the browser alone (a page cannot forge it); without it, the strict sandbox.
    in_frame = request.headers.get("Sec-Fetch-Dest") == "iframe"
    response.headers["Content-Security-Policy"] = BODY_CSP.format(
        remote=" https: http:" if allow_remote else "", sandbox=BODY_SANDBOX_IN_FRAME if in_frame else BODY_SANDBOX)
    response.headers["Vary"] = "Sec-Fetch-Dest"
    response.headers["X-Blocked-Remote-Images"] = str(blocked)
    return response


@bp.get("/tickets/<int:ticket_id>/articles/<int:article_id>/blocked")
@login_required
def article_blocked(ticket_id: int, article_id: int):
    article = _article_or_404(ticket_id, article_id)
    html, _ = _html_of(article, _part())
    if not html:
        return jsonify(blocked=0)
    return jsonify(blocked=sanitize_html(html).blocked_remote_images)


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
    shown_as = article_view.SHOWN_INLINE_IMAGES.get(row.content_type) if params.flag("inline") else None
    response = Response(data, mimetype=shown_as or "application/octet-stream")
    response.headers["Content-Disposition"] = content_disposition("inline" if shown_as else "attachment",
                                                                  row.filename)
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
    response.headers["Content-Disposition"] = content_disposition("attachment",
                                                                  f"ticket-{ticket_id}-article-{article_id}.eml")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def init_app(app: Flask) -> None:
    app.add_template_filter(display_filename, "display_filename")
    app.register_blueprint(bp)
