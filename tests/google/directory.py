"""Who exists at the stand-in: OAuth clients (with their consent-screen settings), Google
Accounts, Workspace admins' app restrictions, and browser sign-in sessions."""
from __future__ import annotations

import secrets
import threading
from typing import Iterable

from .model import (Client, PublishingStatus, User, UserType, new_client_id,
                    new_client_secret)


class Directory:
    """The directory half of GoogleProvider's control API."""

    def __init__(self) -> None:
        self.directory_lock = threading.RLock()
        self.clients: dict[str, Client] = {}
        self.users: dict[str, User] = {}  # by lower-case email
        self.restrictions: set[tuple[str, str]] = set()  # (Workspace domain, client_id)
        self.sessions: dict[str, list[str]] = {}  # browser cookie -> signed-in emails

    def add_client(self, client_id: str | None = None, secret: str | None = None,
                   redirect_uris: Iterable[str] = (), *, user_type: UserType = "internal",
                   publishing_status: PublishingStatus = "production",
                   domain: str | None = None, name: str = "Helpdesk connector",
                   verified: bool = False, test_users: Iterable[str] = (),
                   support_email: str | None = None) -> Client:
        """An OAuth client of type "Web application" in a project whose consent screen has
        `user_type` ("internal": only accounts of Workspace `domain` may use it) and, for
        External apps, `publishing_status` ("testing": only `test_users` may sign in, and
        refresh tokens expire after 7 days)."""
        if user_type not in ("internal", "external"):
            raise ValueError("user_type must be 'internal' or 'external'")
        if publishing_status not in ("production", "testing"):
            raise ValueError("publishing_status must be 'production' or 'testing'")
        if user_type == "internal":
            if not domain:
                raise ValueError("an Internal app belongs to a Workspace organization: pass "
                                 "domain='example.com'")
            if publishing_status != "production":
                raise ValueError("only External apps have a Testing publishing status")
        client = Client(client_id or new_client_id(), secret or new_client_secret(),
                        list(redirect_uris), user_type, publishing_status,
                        domain.lower() if domain else None, name, verified,
                        {e.lower() for e in test_users},
                        support_email or f"admin@{domain or 'example.com'}")
        with self.directory_lock:
            if client.client_id in self.clients:
                raise ValueError(f"client {client.client_id!r} exists already")
            self.clients[client.client_id] = client
        return client

    def add_test_user(self, client_id: str, email: str) -> None:
        """Add a test user on the consent screen of an app in Testing."""
        with self.directory_lock:
            self.client(client_id).test_users.add(email.lower())

    def add_user(self, email: str, password: str = "pw", hd: str | None = None,
                 name: str | None = None, email_verified: bool = True) -> User:
        """A Google Account; `hd` makes it a Workspace account of that domain (the `hd` claim)."""
        user = User(email, password, hd.lower() if hd else None,
                    name or email.split("@")[0].replace(".", " ").title(),
                    email_verified=email_verified)
        with self.directory_lock:
            if email.lower() in self.users:
                raise ValueError(f"user {email!r} exists already")
            self.users[email.lower()] = user
        return user

    def restrict_app(self, domain: str, client_id: str) -> None:
        """A Workspace admin of `domain` blocks the app (Admin console > Security > API
        controls): its users get "Error 400: admin_policy_enforced" and the app's refresh
        tokens for them fail with `admin_policy_enforced`."""
        self.client(client_id)
        with self.directory_lock:
            self.restrictions.add((domain.lower(), client_id))

    def unrestrict_app(self, domain: str, client_id: str) -> None:
        with self.directory_lock:
            self.restrictions.discard((domain.lower(), client_id))

    def is_restricted(self, user: User, client: Client) -> bool:
        with self.directory_lock:
            return user.hd is not None and (user.hd, client.client_id) in self.restrictions

    # ---- lookups -------------------------------------------------------------------------

    def client(self, client_id: str) -> Client:
        with self.directory_lock:
            try:
                return self.clients[client_id]
            except KeyError:
                raise KeyError(f"unknown client {client_id!r}") from None

    def find_client(self, client_id: str) -> Client | None:
        with self.directory_lock:
            return self.clients.get(client_id)

    def user(self, email: str) -> User:
        with self.directory_lock:
            try:
                return self.users[email.lower()]
            except KeyError:
                raise KeyError(f"unknown user {email!r}") from None

    def find_user(self, login: str) -> User | None:
        """By email (any case) or by `sub`, as `login_hint` allows."""
        with self.directory_lock:
            found = self.users.get(login.strip().lower())
            if found is None and login.isdigit():
                found = next((u for u in self.users.values() if u.sub == login), None)
            return found

    # ---- browser sessions ----------------------------------------------------------------

    def session_accounts(self, sid: str | None) -> list[User]:
        with self.directory_lock:
            emails = self.sessions.get(sid or "", [])
            return [self.users[e] for e in emails if e in self.users]

    def sign_in_session(self, sid: str | None, user: User) -> str:
        """Add the account to the browser session (new session id if none); returns the id."""
        with self.directory_lock:
            if not sid or sid not in self.sessions:
                sid = secrets.token_urlsafe(24)
                self.sessions[sid] = []
            if user.email.lower() not in self.sessions[sid]:
                self.sessions[sid].append(user.email.lower())
            return sid

    def sign_out_everywhere(self, user: User) -> None:
        with self.directory_lock:
            for emails in self.sessions.values():
                if user.email.lower() in emails:
                    emails.remove(user.email.lower())
