"""One mailbox over Microsoft Graph v1.0: read new mail as MIME, act on it after import, send, look up.

    mailbox = GraphMailbox("alice@contoso.com", token, graph_host=settings.microsoft.graph_host,
                           ca_bundle=settings.ca_bundle)           # /me/...
    shared = GraphMailbox("support@contoso.com", token, shared=True, user="agent@contoso.com")  # /users/...
    for page in mailbox.delta_pages("Inbox", stored_cursor):
        for key, raw in mailbox.fetch_mime([m.id for m in page.messages]): ...
        store(page.cursor)
    mailbox.after_import(keys, "move", "Archive/2026")
    mailbox.send_mime(raw)            # POST /sendMail, base64 MIME: headers survive; saved to Sent Items
    mailbox.find_sent("<id@host>")    # after a crash: was it sent?

`token(force_refresh)` returns an access token for https://graph.microsoft.com with the delegated
Mail.* permissions (.Shared ones for a shared mailbox, whose delegate needs Full Access and, to send,
Send As). Every failure is a `GraphError` (errors.py) with a sentence for people.
"""
from __future__ import annotations

import base64
import logging
from dataclasses import dataclass
from typing import Iterable, Iterator
from urllib.parse import quote

from .delta import DEFAULT_PAGE_SIZE, DeltaPage, DeltaReader
from .errors import GraphError, Where, too_large
from .folders import FolderResolver
from .http import MAILBOX_CONCURRENCY, GraphHttp, TokenSource
from .parallel import ordered

log = logging.getLogger(__name__)

GRAPH_HOST = "https://graph.microsoft.com"
MAX_REQUEST_BYTES = 4 * 1024 * 1024  # Graph's request size limit; sendMail's MIME goes base64 in one request
ACTIONS = ("keep", "mark_read", "move", "delete")


@dataclass(frozen=True)
class FolderInfo:
    id: str
    display_name: str
    total: int  # messages in the folder now (for the first import's progress)
    unread: int


def odata_string(value: str) -> str:
    """An OData string literal: single quotes, a quote inside doubled."""
    return "'" + value.replace("'", "''") + "'"


def normalise_message_id(message_id: str) -> str:
    value = (message_id or "").strip()
    if not value or any(c in value for c in "\r\n\0") or len(value) > 998:
        raise ValueError(f"not a Message-ID: {message_id!r}")
    return value if value.startswith("<") and value.endswith(">") else f"<{value.strip('<>')}>"


class GraphMailbox:
    def __init__(self, address: str, token: TokenSource, *, shared: bool = False, user: str = "",
                 graph_host: str = GRAPH_HOST, ca_bundle: str | None = None,
                 concurrency: int = MAILBOX_CONCURRENCY, **http_options) -> None:
        self.address = address
        self.shared = shared
        self.concurrency = max(1, min(concurrency, MAILBOX_CONCURRENCY))
        self.prefix = f"users/{quote(address, safe='@')}" if shared else "me"
        where = Where(address, user or ("" if shared else address), shared, graph_host.rstrip("/"))
        self.http = GraphHttp(graph_host, token, where, ca_bundle, concurrency=self.concurrency, **http_options)
        self.folders = FolderResolver(self.http, self.prefix)
        self.delta = DeltaReader(self.http, self.prefix)

    # -- reading ----------------------------------------------------------------------------
    def folder_id(self, folder: str) -> str:
        return self.folders.resolve(folder)

    def folder_info(self, folder: str) -> FolderInfo:
        folder_id = self.folders.resolve(folder)
        body = self.http.get_json(f"{self.prefix}/mailFolders/{quote(folder_id, safe='')}",
                                  params={"$select": "id,displayName,totalItemCount,unreadItemCount"})
        return FolderInfo(str(body["id"]), str(body.get("displayName", "")), int(body.get("totalItemCount") or 0),
                          int(body.get("unreadItemCount") or 0))

    def delta_pages(self, folder: str, cursor: str | None,
                    page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[DeltaPage]:
        """The folder's new mail since `cursor` (None: everything), a page at a time; see delta.py."""
        return self.delta.pages(self.folders.resolve(folder), cursor, page_size)

    def list_folder(self, folder: str, limit: int = 10_000) -> list[tuple[str, str]]:
        """(id, Message-ID) of the mails in `folder` now, newest first, at most `limit`."""
        folder_id = self.folders.resolve(folder)
        link: str | None = f"{self.prefix}/mailFolders/{quote(folder_id, safe='')}/messages"
        params: dict[str, str] | None = {"$select": "id,internetMessageId", "$top": "100"}
        found: list[tuple[str, str]] = []
        while link and len(found) < limit:
            page = self.http.get_json(link, params=params)
            found += [(str(m["id"]), str(m.get("internetMessageId") or "")) for m in page.get("value", [])
                      if isinstance(m, dict) and m.get("id")]
            link, params = page.get("@odata.nextLink"), None
        return found[:limit]

    def fetch_one(self, message_id: str) -> bytes | None:
        """The mail's MIME exactly as stored (`/$value`), or None when it is gone meanwhile."""
        try:
            response = self.http.request("GET", f"{self._message(message_id)}/$value",
                                         headers={"Accept": "*/*"})
        except GraphError as exc:
            if exc.not_found:
                return None
            raise
        return response.content

    def fetch_mime(self, message_ids: Iterable[str]) -> Iterator[tuple[str, bytes]]:
        """(id, MIME) in the order given, `concurrency` at a time; mail gone meanwhile is skipped. On an
        error, the mails before it have been given and the error is raised at its place."""
        for key, raw in ordered(message_ids, self.fetch_one, self.concurrency):
            if raw is None:
                log.info("%s: a mail was gone before it could be fetched; skipped", self.address)
                continue
            yield key, raw

    # -- after import -----------------------------------------------------------------------
    def mark_read(self, message_ids: Iterable[str]) -> None:
        self._each(message_ids, lambda key: self.http.request(
            "PATCH", self._message(key), operation="write", json_body={"isRead": True}))

    def move(self, message_ids: Iterable[str], folder: str) -> None:
        """Move to `folder` (a path such as "Archive/2026"), creating it if it does not exist."""
        ids = list(message_ids)
        if not ids:
            return
        destination = self.folders.ensure(folder)
        self._each(ids, lambda key: self.http.request(
            "POST", f"{self._message(key)}/move", operation="write", json_body={"destinationId": destination}))

    def delete(self, message_ids: Iterable[str]) -> None:
        """To Deleted Items, as Outlook's Delete does."""
        self._each(message_ids, lambda key: self.http.request("DELETE", self._message(key), operation="write"))

    def after_import(self, message_ids: Iterable[str], action: str, folder: str = "") -> None:
        if action not in ACTIONS:
            raise ValueError(f"unknown post-import action {action!r}")
        if action == "mark_read":
            self.mark_read(message_ids)
        elif action == "move" and folder:
            self.move(message_ids, folder)
        elif action == "delete":
            self.delete(message_ids)

    def _each(self, message_ids: Iterable[str], call) -> None:
        def one(key: str) -> None:
            try:
                call(key)
            except GraphError as exc:
                if not exc.not_found:  # gone already: what the action wanted, or someone did it
                    raise
        for _ in ordered(message_ids, one, self.concurrency):
            pass

    # -- sending ----------------------------------------------------------------------------
    def send_mime(self, raw: bytes) -> None:
        """Send `raw` as it is (Message-ID, In-Reply-To, References, subject tag kept) through
        https://learn.microsoft.com/graph/api/user-sendmail with the base64 MIME body; Exchange saves a
        copy in Sent Items. Never retried here: a lost answer is settled by `find_sent`."""
        body = base64.b64encode(raw)
        if len(body) > MAX_REQUEST_BYTES:
            raise too_large(self.http.where, len(raw))
        self.http.request("POST", f"{self.prefix}/sendMail", operation="send", idempotent=False, data=body,
                          headers={"Content-Type": "text/plain"})

    def find_sent(self, message_id: str) -> bool:
        """Whether a mail with this Message-ID is in Sent Items (the outbox asks this after a crash)."""
        wanted = normalise_message_id(message_id)
        query = f"internetMessageId eq {odata_string(wanted)}"
        body = self.http.get_json(f"{self.prefix}/mailFolders/sentitems/messages?$filter={quote(query, safe='')}"
                                  "&$select=id,internetMessageId&$top=10")
        return any(str(m.get("internetMessageId", "")).strip().lower() == wanted.lower()
                   for m in body.get("value", []))

    def _message(self, message_id: str) -> str:
        return f"{self.prefix}/messages/{quote(message_id, safe='=-_')}"

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> "GraphMailbox":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
