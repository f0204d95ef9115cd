"""Gmail's ways over IMAP (imap.gmail.com), on top of mail/imap.py's session.

- Folders are labels. A mail in INBOX and labelled "Orders" is in both folders; "move" to a folder
  adds that label and takes INBOX's away, which is Gmail's "archive with a label".
- "Delete" by IMAP's rules (\\Deleted + EXPUNGE) only removes the label of the folder it was done in:
  with Gmail's default settings ("When a message is marked as deleted and expunged from the last
  visible IMAP folder: Archive the message") the mail stays in "All Mail". So the post-import action
  "delete" moves the mail to the Trash (special-use \\Trash; "[Gmail]/Trash", "[Google Mail]/Trash"
  in some countries), from which Gmail deletes it for good after 30 days.
- Gmail files every mail sent through smtp.gmail.com in "Sent Mail" (\\Sent). The outbox's look-up
  after a crash searches there and then in "All Mail" (\\All), which holds every mail whatever its
  labels (a sent mail whose Sent label was removed is still there). Special-use flags, not names:
  the names are localized.
- IMAP can be switched off: by the user (Gmail > Settings > Forwarding and POP/IMAP) or for a
  Workspace domain by its admin. Gmail then refuses the sign-in with an [ALERT] that says so, which
  is told in words here; a new token would not help.
"""
from __future__ import annotations

import logging

from imapclient.exceptions import IMAPClientError, LoginError

from .imap import ImapError, ImapMailbox

log = logging.getLogger(__name__)

TRASH_NAMES = ("[Gmail]/Trash", "[Google Mail]/Trash")
SENT_NAMES = ("[Gmail]/Sent Mail", "[Google Mail]/Sent Mail")
ALL_MAIL_NAMES = ("[Gmail]/All Mail", "[Google Mail]/All Mail")
GMAIL_CONNECTION_LIMIT = 15  # "Too many simultaneous connections": Gmail allows 15 IMAP connections per account
TOO_MANY_RETRY_SECONDS = 300

IMAP_OFF_USER = ("Gmail refused IMAP for {user}: IMAP access is switched off in its Gmail settings. Sign in to "
                 "Gmail as {user}, open Settings (the gear) > See all settings > Forwarding and POP/IMAP, choose "
                 "\"Enable IMAP\" and Save; the mailbox resumes by itself.")
IMAP_OFF_DOMAIN = ("Gmail refused IMAP for {user}: an admin of its Google Workspace domain switched IMAP off. In the "
                   "Google Admin console > Apps > Google Workspace > Gmail > End User Access, turn on \"POP and IMAP "
                   "access\" for the users (or the organizational unit) of this mailbox; the mailbox resumes by "
                   "itself.")
WEB_LOGIN = ("Gmail wants {user} to sign in once in a web browser before it allows IMAP (\"Please log in via your "
             "web browser\"): sign in to Gmail in a browser as {user}, then reconnect the mailbox.")
TOO_MANY = (f"Gmail refused a new IMAP connection for {{user}}: it allows {GMAIL_CONNECTION_LIMIT} at once per "
            "account and other mail apps use the rest. Waiting, then trying again; close other IMAP apps of this "
            "account if it persists.")
REFUSED = ("Gmail refused the sign-in for {user} (AUTHENTICATE XOAUTH2 failed): the access of the Google app was "
           "removed or the token does not carry Gmail access (https://mail.google.com/). Reconnect the mailbox "
           "and allow Gmail access on Google's consent screen.")


def login_refusal(user: str, server_text: str) -> ImapError:
    """Gmail's answer to a refused sign-in, in words (its [ALERT] texts, as imap.gmail.com sends them)."""
    text = server_text.lower()
    if "not enabled for imap" in text:
        return ImapError(IMAP_OFF_USER.format(user=user), retry_after=900)
    if "imap access is disabled" in text or "domain administrator" in text:
        return ImapError(IMAP_OFF_DOMAIN.format(user=user), retry_after=900)
    if "web browser" in text:
        return ImapError(WEB_LOGIN.format(user=user), retry_after=900)
    if "too many simultaneous connections" in text:
        return ImapError(TOO_MANY.format(user=user), retry_after=TOO_MANY_RETRY_SECONDS)
    return ImapError(REFUSED.format(user=user), auth_failed=True)


class GmailMailbox(ImapMailbox):
    """One signed-in connection to a Gmail or Google Workspace mailbox."""

    def login(self, user: str, token: str) -> None:
        try:
            self.client.oauth2_login(user, token)
        except LoginError as exc:
            raise login_refusal(user, str(exc)) from None
        except (OSError, IMAPClientError) as exc:
            raise ImapError(f"The IMAP connection failed during sign-in ({type(exc).__name__}).") from None

    def delete(self, uids: list[int]) -> None:
        """Into the Trash (see the module doc: an expunge would only archive)."""
        if not uids:
            return
        trash = self._special_folder(b"\\Trash", TRASH_NAMES)
        if trash is None:
            log.warning("Gmail mailbox without a Trash folder: the deleted mail is archived (in All Mail)")
            super().delete(uids)
            return
        self.move(uids, trash)

    def sent_folders(self) -> list[str]:
        """Sent Mail, then All Mail (every mail, whatever its labels)."""
        folders = [self._special_folder(b"\\Sent", SENT_NAMES), self._special_folder(b"\\All", ALL_MAIL_NAMES)]
        return [name for name in folders if name is not None]

    def _special_folder(self, flag: bytes, names: tuple[str, ...]) -> str | None:
        listed = self.client.list_folders()
        for flags, _delimiter, name in listed:
            if flag in flags:
                return name
        present = {name for _flags, _delimiter, name in listed}
        return next((name for name in names if name in present), None)
