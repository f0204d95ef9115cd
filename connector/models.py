"""The database schema: SQLAlchemy 2.0 typed models.

Times are stored as naive UTC (`utcnow()`), which SQLite and PostgreSQL both keep exactly.
"""
from __future__ import annotations

from datetime import date, datetime, timezone
from typing import Optional

from sqlalchemy import (BigInteger, Boolean, CheckConstraint, Date, DateTime, ForeignKey, Index, Integer,
                        LargeBinary, String, Text, UniqueConstraint, false, text)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


ROLES = ("admin", "agent")
ACCOUNT_STATUSES = ("connected", "needs_reconnect", "error", "disabled")
PROVIDERS = ("microsoft", "google")
TRANSPORTS = ("imap", "graph")
POST_IMPORT_ACTIONS = ("keep", "mark_read", "move", "delete")
TICKET_STATUSES = ("open", "pending", "closed")
DELIVERY_STATES = ("queued", "sending", "sent", "failed")


class User(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    role: Mapped[str] = mapped_column(String(16), default="agent")
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_login_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    # Raised by a sign-out or a password change: every session cookie signed with an older value is void.
    session_generation: Mapped[int] = mapped_column(Integer, default=0, server_default=text("0"))

    __table_args__ = (CheckConstraint(f"role IN {ROLES}", name="ck_users_role"),)

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    # Flask-Login protocol
    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def is_anonymous(self) -> bool:
        return False

    def get_id(self) -> str:
        return str(self.id)


class ApiToken(Base):
    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    name: Mapped[str] = mapped_column(String(100), default="", server_default="")
    expires_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_used_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    revoked_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    user: Mapped[User] = relationship()


class LoginThrottle(Base):
    """Failed sign-ins per key (account + client, client, account; see throttle.py), to slow down guessing."""
    __tablename__ = "login_throttle"
    key: Mapped[str] = mapped_column(String(400), primary_key=True)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    last_failure_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    locked_until: Mapped[Optional[datetime]] = mapped_column(DateTime)


class AppRegistration(Base):
    """The one Azure app registration (a single row, id 1)."""
    __tablename__ = "app_registration"
    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(100))
    tenant: Mapped[str] = mapped_column(String(255))
    client_secret_enc: Mapped[Optional[bytes]] = mapped_column(LargeBinary)
    secret_set_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    secret_expires_on: Mapped[Optional[date]] = mapped_column(Date)
    verified_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    updated_by: Mapped[Optional[str]] = mapped_column(String(320))


class GoogleAppRegistration(Base):
    """The one Google OAuth client ("Web application") that Gmail and Workspace mailboxes connect through
    (a single row, id 1)."""
    __tablename__ = "google_app_registration"
    id: Mapped[int] = mapped_column(primary_key=True)
    client_id: Mapped[str] = mapped_column(String(255))
    client_secret_enc: Mapped[Optional[bytes]] = mapped_column(LargeBinary)
    secret_set_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    verified_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    updated_by: Mapped[Optional[str]] = mapped_column(String(320))


class AppSetting(Base):
    """A setting admins change on the pages (key/value), e.g. "default_transport" (transport/choice.py)."""
    __tablename__ = "app_settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, onupdate=utcnow)
    updated_by: Mapped[Optional[str]] = mapped_column(String(320))


class Account(Base):
    """A connected mailbox: where its mail comes from and the tokens to reach it."""
    __tablename__ = "accounts"
    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(255), default="")
    provider: Mapped[str] = mapped_column(String(16), default="microsoft", server_default="microsoft")
    transport: Mapped[str] = mapped_column(String(16), default="imap", server_default="imap")
    token_owner: Mapped[str] = mapped_column(String(320), default="")  # the signed-in user (delegate for a shared mailbox)
    # Who signed in, as the provider identifies them for good: Microsoft's `oid` (with `tenant_id` = `tid`);
    # names like preferred_username can change hands.
    token_subject: Mapped[str] = mapped_column(String(255), default="", server_default="")
    tenant_id: Mapped[str] = mapped_column(String(64), default="")
    home_account_id: Mapped[str] = mapped_column(String(255), default="")
    token_cache_enc: Mapped[Optional[bytes]] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(20), default="connected")
    last_error: Mapped[Optional[str]] = mapped_column(Text)
    last_sync_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    connected_by_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    connected_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    # what to read and what to do after import
    folder: Mapped[str] = mapped_column(String(255), default="INBOX")
    post_import_action: Mapped[str] = mapped_column(String(16), default="keep")
    move_to_folder: Mapped[str] = mapped_column(String(255), default="")
    # incremental sync state
    uidvalidity: Mapped[Optional[int]] = mapped_column(BigInteger)
    last_uid: Mapped[int] = mapped_column(BigInteger, default=0)
    # Up to which UID the post-import action has run (a move or delete may die after its batch's commit: the
    # next pass runs it for the mails still in the folder up to last_uid; sync/post_import.py)
    post_import_done_uid: Mapped[Optional[int]] = mapped_column(BigInteger)
    sync_total: Mapped[int] = mapped_column(Integer, default=0)  # messages in the folder at the last pass
    sync_done: Mapped[int] = mapped_column(Integer, default=0)  # of which imported
    # Where the transport's incremental sync stands when UIDVALIDITY + UID do not say it: Microsoft Graph's
    # delta link (transport "graph"); unused over IMAP.
    sync_cursor: Mapped[Optional[str]] = mapped_column(Text)
    # scheduling across workers (worker/leases.py): the lease holder, until when, and a fencing token that
    # every new claim raises, so a worker whose lease was taken over cannot commit (sync/fence.py)
    lease_owner: Mapped[Optional[str]] = mapped_column(String(120))
    lease_expires_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    lease_token: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))
    failure_count: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[Optional[datetime]] = mapped_column(DateTime)

    members: Mapped[list["AccountMember"]] = relationship(back_populates="account", cascade="all, delete-orphan")

    __table_args__ = (
        CheckConstraint(f"status IN {ACCOUNT_STATUSES}", name="ck_accounts_status"),
        CheckConstraint(f"post_import_action IN {POST_IMPORT_ACTIONS}", name="ck_accounts_action"),
    )


class AccountMember(Base):
    __tablename__ = "account_members"
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    account: Mapped[Account] = relationship(back_populates="members")
    user: Mapped[User] = relationship()


class GraphSubscription(Base):
    """A mailbox's Microsoft Graph change-notification subscription (transport "graph"), and what its
    notifications left for the worker: `news_at` (new mail to read) and a pending `lifecycle_event`.
    The clientState secret is kept only as its SHA-256 (connector/mail/graph/notify_store.py)."""
    __tablename__ = "graph_subscriptions"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), unique=True)
    subscription_id: Mapped[Optional[str]] = mapped_column(String(128), unique=True)  # None: none active
    resource: Mapped[str] = mapped_column(String(512), default="")
    client_state_hash: Mapped[str] = mapped_column(String(64), default="")
    expires_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    renewed_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    news_at: Mapped[Optional[datetime]] = mapped_column(DateTime, index=True)
    lifecycle_event: Mapped[Optional[str]] = mapped_column(String(40))
    next_attempt_at: Mapped[Optional[datetime]] = mapped_column(DateTime)  # after a failed create
    last_error: Mapped[Optional[str]] = mapped_column(Text)


class Blob(Base):
    """Content-addressed bytes: raw mails, attachments. Stored once whatever refers to them.

    With `pack` set, the bytes are not in `data` (empty) but at `pack_offset` in that pack file next to
    the SQLite database (see blobs.py).
    """
    __tablename__ = "blobs"
    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    data: Mapped[bytes] = mapped_column(LargeBinary)
    pack: Mapped[Optional[str]] = mapped_column(String(64))
    pack_offset: Mapped[Optional[int]] = mapped_column(BigInteger)


class Ticket(Base):
    __tablename__ = "tickets"
    id: Mapped[int] = mapped_column(primary_key=True)
    number: Mapped[int] = mapped_column(Integer, unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    subject: Mapped[str] = mapped_column(Text, default="")
    status: Mapped[str] = mapped_column(String(16), default="open")
    customer_address: Mapped[str] = mapped_column(String(320), default="")
    customer_name: Mapped[str] = mapped_column(String(255), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    article_count: Mapped[int] = mapped_column(Integer, default=0)

    account: Mapped[Account] = relationship()
    articles: Mapped[list["Article"]] = relationship(back_populates="ticket", order_by="Article.id")

    __table_args__ = (
        CheckConstraint(f"status IN {TICKET_STATUSES}", name="ck_tickets_status"),
        Index("ix_tickets_updated", "updated_at", "id"),
        Index("ix_tickets_account_updated", "account_id", "updated_at"),
        Index("ix_tickets_status_updated", "status", "updated_at"),
    )


class Article(Base):
    """One mail of a ticket, incoming or outgoing."""
    __tablename__ = "articles"
    id: Mapped[int] = mapped_column(primary_key=True)
    ticket_id: Mapped[int] = mapped_column(ForeignKey("tickets.id", ondelete="CASCADE"), index=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    direction: Mapped[str] = mapped_column(String(3))  # "in" | "out"
    message_id: Mapped[str] = mapped_column(String(998))
    in_reply_to: Mapped[str] = mapped_column(Text, default="")
    references: Mapped[str] = mapped_column(Text, default="")
    from_addr: Mapped[str] = mapped_column(String(320), default="")
    from_name: Mapped[str] = mapped_column(String(255), default="")
    to_addrs: Mapped[str] = mapped_column(Text, default="")  # comma-separated addresses
    cc_addrs: Mapped[str] = mapped_column(Text, default="")
    subject: Mapped[str] = mapped_column(Text, default="")
    date: Mapped[Optional[datetime]] = mapped_column(DateTime)
    body_text: Mapped[str] = mapped_column(Text, default="")
    body_html: Mapped[Optional[str]] = mapped_column(Text)
    raw_sha256: Mapped[Optional[str]] = mapped_column(ForeignKey("blobs.sha256"))
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    is_auto: Mapped[bool] = mapped_column(Boolean, default=False)
    is_bounce: Mapped[bool] = mapped_column(Boolean, default=False)
    notes: Mapped[str] = mapped_column(Text, default="")
    imap_uid: Mapped[Optional[int]] = mapped_column(BigInteger)
    # Imported from headers only: body, HTML and attachments are still to be extracted from the raw mail.
    body_pending: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # What a mail client shows of it, in order (JSON slices of body_text/body_html, see mail/display.py);
    # None for outgoing mail and for mail stored before revision 0008 (re-read from the raw mail on view).
    display: Mapped[Optional[str]] = mapped_column(Text)
    author_id: Mapped[Optional[int]] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    ticket: Mapped[Ticket] = relationship(back_populates="articles")
    attachments: Mapped[list["Attachment"]] = relationship(back_populates="article", order_by="Attachment.id",
                                                           cascade="all, delete-orphan")
    outbox: Mapped[Optional["OutboxItem"]] = relationship(back_populates="article", uselist=False)

    __table_args__ = (
        UniqueConstraint("account_id", "message_id", name="uq_articles_account_message"),
        Index("ix_articles_message_id", "message_id"),
        Index("ix_articles_body_pending", "id", sqlite_where=text("body_pending = 1"),
              postgresql_where=text("body_pending")),
    )


class Attachment(Base):
    __tablename__ = "attachments"
    id: Mapped[int] = mapped_column(primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"), index=True)
    blob_sha256: Mapped[str] = mapped_column(ForeignKey("blobs.sha256"))
    filename: Mapped[str] = mapped_column(String(500))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(BigInteger)
    content_id: Mapped[Optional[str]] = mapped_column(String(500))
    inline: Mapped[bool] = mapped_column(Boolean, default=False)
    article: Mapped[Article] = relationship(back_populates="attachments")


class ImportFailure(Base):
    """A message that failed to import; after three tries it is quarantined and the sync moves on.

    Over IMAP a message is (uidvalidity, uid); a transport whose message ids are strings (Microsoft
    Graph) leaves those empty and keys its failures by `message_key`."""
    __tablename__ = "import_failures"
    id: Mapped[int] = mapped_column(primary_key=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    uidvalidity: Mapped[Optional[int]] = mapped_column(BigInteger)
    uid: Mapped[Optional[int]] = mapped_column(BigInteger)
    message_key: Mapped[Optional[str]] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str] = mapped_column(Text, default="")
    quarantined: Mapped[bool] = mapped_column(Boolean, default=False)
    raw_sha256: Mapped[Optional[str]] = mapped_column(ForeignKey("blobs.sha256"))
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)

    __table_args__ = (UniqueConstraint("account_id", "uidvalidity", "uid", name="uq_import_failures_uid"),
                      UniqueConstraint("account_id", "message_key", name="uq_import_failures_key"))


class OutboxItem(Base):
    """A built outgoing mail waiting for, or done with, SMTP submission. Written with its article."""
    __tablename__ = "outbox"
    id: Mapped[int] = mapped_column(primary_key=True)
    article_id: Mapped[int] = mapped_column(ForeignKey("articles.id", ondelete="CASCADE"), unique=True)
    account_id: Mapped[int] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    mail_from: Mapped[str] = mapped_column(String(320))
    rcpt_to: Mapped[str] = mapped_column(Text)  # comma-separated envelope recipients
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    state: Mapped[str] = mapped_column(String(16), default="queued")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    last_error: Mapped[Optional[str]] = mapped_column(Text)
    server_reply: Mapped[Optional[str]] = mapped_column(Text)
    lease_owner: Mapped[Optional[str]] = mapped_column(String(120))
    lease_expires_at: Mapped[Optional[datetime]] = mapped_column(DateTime)
    lease_token: Mapped[int] = mapped_column(BigInteger, default=0, server_default=text("0"))  # as accounts'
    created_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    sent_at: Mapped[Optional[datetime]] = mapped_column(DateTime)

    article: Mapped[Article] = relationship(back_populates="outbox")

    __table_args__ = (
        CheckConstraint(f"state IN {DELIVERY_STATES}", name="ck_outbox_state"),
        Index("ix_outbox_due", "state", "next_attempt_at"),
    )


class WorkerProcess(Base):
    """A live worker: it beats every few seconds and removes its row when it stops (worker/registry.py).
    Mailboxes are spread over the workers whose beat is recent (worker/leases.py)."""
    __tablename__ = "workers"
    id: Mapped[str] = mapped_column(String(120), primary_key=True)  # host:pid:name, as in accounts.lease_owner
    hostname: Mapped[str] = mapped_column(String(255), default="")
    pid: Mapped[int] = mapped_column(Integer, default=0)
    started_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(DateTime, default=utcnow, index=True)
    mailboxes: Mapped[int] = mapped_column(Integer, default=0)  # held at the last beat
    stopping: Mapped[bool] = mapped_column(Boolean, default=False)
