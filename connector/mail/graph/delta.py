"""What is new in a folder, by delta query: pages, a cursor that survives restarts, expiry.

https://learn.microsoft.com/graph/api/message-delta and /graph/delta-query-messages: a round starts at
`/mailFolders/{id}/messages/delta` and follows `@odata.nextLink` pages until an `@odata.deltaLink`,
which starts the next round with only what changed since. Either link is a cursor: the sync stores
the one of the last page it imported (like UIDVALIDITY + UID), so a restart goes on from there.

- `changeType=created` asks only for mail that arrived in the folder (moved in counts): marking an
  imported mail read does not bring it back as "updated", which would cost a fetch per mail.
- `$select` keeps the pages small: the id, the Message-ID (dedup can skip a fetch) and the time.
- An expired or reset token (410 syncStateNotFound, or resyncRequired with a Location holding the
  initial request) restarts the folder from the start once (`DeltaPage.restarted`); the sync's
  Message-ID dedup keeps that free of duplicates. `@removed` entries are not imports and are skipped.
- The cursor is `<folder id> <link>`: Graph's links are opaque (and may name the folder or mailbox
  differently from how we asked), so the folder the cursor belongs to is kept beside the link. A
  cursor of another folder (the setting changed) or another Graph host is not used: a fresh round.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator
from urllib.parse import quote

from .errors import GraphError
from .http import GraphHttp

SELECT = "id,internetMessageId,receivedDateTime"
EXPIRED_CODES = ("syncstatenotfound", "syncstateinvalid", "resyncrequired")
DEFAULT_PAGE_SIZE = 100


@dataclass(frozen=True)
class DeltaMessage:
    id: str  # immutable id: the key of this mail in the mailbox
    internet_message_id: str  # "" when Graph gave none
    received: str  # ISO 8601 as Graph wrote it, "" when absent


@dataclass(frozen=True)
class DeltaPage:
    messages: list[DeltaMessage]
    cursor: str  # store it once these messages are imported: "<folder id> <next page or next round link>"
    done: bool  # the cursor is the round's deltaLink: the folder is read up to now
    restarted: bool  # the stored cursor was expired or for another folder: this round reads everything


def expired(exc: GraphError) -> bool:
    return exc.code.lower() in EXPIRED_CODES or (exc.status == 410 and not exc.throttled)


class DeltaReader:
    def __init__(self, http: GraphHttp, prefix: str) -> None:
        self.http = http
        self.prefix = prefix

    def initial(self, folder_id: str) -> str:
        return self.http.url(f"{self.prefix}/mailFolders/{quote(folder_id, safe='')}/messages/delta"
                             f"?$select={SELECT}&changeType=created")

    def link_of(self, cursor: str | None, folder_id: str) -> str | None:
        """The link stored in `cursor` if it belongs to this folder at this Graph host."""
        folder, _, link = (cursor or "").partition(" ")
        if folder != folder_id or not link or not self.http.owns(link):
            return None
        return link

    def pages(self, folder_id: str, cursor: str | None,
              page_size: int = DEFAULT_PAGE_SIZE) -> Iterator[DeltaPage]:
        stored = self.link_of(cursor, folder_id)
        restarted = stored is None
        link = stored or self.initial(folder_id)
        retried = False
        prefer = f"odata.maxpagesize={page_size}"
        while True:
            try:
                body = self.http.get_json(link, headers={"Prefer": prefer})
            except GraphError as exc:
                if not expired(exc) or retried:
                    raise
                # resyncRequired's Location holds the initial request; ours is that request with our
                # $select and changeType, so a restart asks for exactly what a first round asks for.
                retried = restarted = True
                link = self.initial(folder_id)
                continue
            next_link, delta_link = body.get("@odata.nextLink"), body.get("@odata.deltaLink")
            if not next_link and not delta_link:
                raise GraphError(f"Microsoft Graph ended a delta page of {self.http.where.address} without a "
                                 "next or delta link; the folder is read again next time.",
                                 code="DeltaWithoutLink", retry_after=60.0)
            yield DeltaPage(self._messages(body.get("value", [])), f"{folder_id} {next_link or delta_link}",
                            done=not next_link, restarted=restarted)
            if not next_link:
                return
            link = str(next_link)

    @staticmethod
    def _messages(values: list) -> list[DeltaMessage]:
        out = []
        for item in values:
            if not isinstance(item, dict) or "@removed" in item or not item.get("id"):
                continue
            out.append(DeltaMessage(str(item["id"]), str(item.get("internetMessageId") or ""),
                                    str(item.get("receivedDateTime") or "")))
        return out
