"""Folder names as people write them -> Graph folder ids, creating missing ones for "move".

A mailbox setting names a folder the way an IMAP user would: a well-known folder ("INBOX", "inbox",
"sentitems", ...) or a display-name path from the top of the mailbox ("Archive/2026",
"Inbox/Processed"), case-insensitive like Outlook. Well-known names are Graph's
(https://learn.microsoft.com/graph/api/resources/mailfolder); child folders are listed page by page
(https://learn.microsoft.com/graph/api/mailfolder-list-childfolders) and created with
https://learn.microsoft.com/graph/api/mailfolder-post-childfolders (409 ErrorFolderExists when
someone else was quicker: then it is looked up again).
"""
from __future__ import annotations

from urllib.parse import quote

from .errors import GraphError
from .http import GraphHttp

WELL_KNOWN = ("inbox", "archive", "drafts", "sentitems", "deleteditems", "junkemail", "outbox",
              "msgfolderroot", "conversationhistory", "clutter", "scheduled", "searchfolders",
              "recoverableitemsdeletions", "syncissues", "conflicts", "localfailures", "serverfailures")
ROOT = "msgfolderroot"


def segments(name: str) -> list[str]:
    parts = [p.strip() for p in (name or "").replace("\\", "/").split("/")]
    return [p for p in parts if p]


class FolderResolver:
    def __init__(self, http: GraphHttp, prefix: str) -> None:
        self.http = http
        self.prefix = prefix  # "me" or "users/{address}"
        self._ids: dict[str, str] = {}

    def resolve(self, name: str) -> str:
        """The folder's id; a GraphError naming the folder when it does not exist."""
        found = self._walk(name, create=False)
        if found is None:
            raise GraphError(
                f"There is no folder \"{name}\" in {self.http.where.address}: pick an existing folder (a "
                "well-known name such as Inbox, or a path such as Archive/2026) in the mailbox's settings.",
                code="FolderNotFound", status=404, permanent=True)
        return found

    def ensure(self, name: str) -> str:
        """The folder's id, creating it (and missing parents) first if needed."""
        found = self._walk(name, create=True)
        assert found is not None
        return found

    def _walk(self, name: str, create: bool) -> str | None:
        parts = segments(name)
        if not parts:
            parts = ["inbox"]
        key = "/".join(p.lower() for p in parts)
        if key in self._ids:
            return self._ids[key]
        parent = ROOT
        start = 0
        if parts[0].lower() in WELL_KNOWN:
            parent = self._well_known(parts[0].lower())
            start = 1
        for part in parts[start:]:
            child = self._child(parent, part)
            if child is None:
                if not create:
                    return None
                child = self._create(parent, part)
            parent = child
        self._ids[key] = parent
        return parent

    def _well_known(self, name: str) -> str:
        body = self.http.get_json(f"{self.prefix}/mailFolders/{name}", params={"$select": "id"})
        return str(body["id"])

    def _child(self, parent: str, display_name: str) -> str | None:
        link: str | None = f"{self.prefix}/mailFolders/{quote(parent, safe='')}/childFolders"
        params: dict[str, str] | None = {"$select": "id,displayName", "$top": "100",
                                         "includeHiddenFolders": "true"}
        wanted = display_name.casefold()
        while link:
            page = self.http.get_json(link, params=params)
            for folder in page.get("value", []):
                if str(folder.get("displayName", "")).casefold() == wanted:
                    return str(folder["id"])
            link, params = page.get("@odata.nextLink"), None
        return None

    def _create(self, parent: str, display_name: str) -> str:
        path = f"{self.prefix}/mailFolders/{quote(parent, safe='')}/childFolders"
        try:
            response = self.http.request("POST", path, operation="write", idempotent=False,
                                         json_body={"displayName": display_name})
        except GraphError as exc:
            if exc.status == 409:  # created meanwhile by someone else
                found = self._child(parent, display_name)
                if found is not None:
                    return found
            raise
        return str(response.json()["id"])
