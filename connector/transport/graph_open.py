"""Opening a mailbox over Microsoft Graph: its token source, its options, its change notifications.

No network happens here: Graph has no session to sign in to; the first request asks tokens.py for a
Graph token ("graph", or "graph_shared" with the .Shared permissions for a delegate's shared mailbox).
"""
from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from .. import tokens
from ..accounts import is_shared
from ..mail.graph import GraphError, GraphMailbox
from ..mail.graph import notify_store
from ..mail.smtp import SendFailure
from ..models import Account, Article
from .graph import GraphSubmitter, GraphTransport

log = logging.getLogger(__name__)


def token_purpose(account: Account) -> str:
    return "graph_shared" if is_shared(account) else "graph"


def token_source(rt, account_id: int, purpose: str):
    """`source(force_refresh) -> token`, each call in its own short session (it runs on fetch threads)."""
    def source(force_refresh: bool) -> str:
        with rt.db.sessionmaker() as session:
            account = session.get(Account, account_id)
            if account is None:
                raise GraphError("The mailbox was removed.", code="NoAccount", permanent=True, reconnect=True)
            try:
                return tokens.access_token(session, rt, account, purpose, force_refresh=force_refresh)
            except tokens.TokenUnavailable as exc:
                raise GraphError(exc.message, code="TokenUnavailable", reconnect=exc.reconnect,
                                 retry_after=exc.retry_after, auth=True, permanent=exc.fix_needed) from None
    return source


def graph_mailbox(rt, account: Account, source=None) -> GraphMailbox:
    """Over the account's own tokens (tokens.py), or `source(force_refresh) -> token` when given."""
    shared = is_shared(account)
    source = source or token_source(rt, account.id, token_purpose(account))
    return GraphMailbox(account.address, source, shared=shared,
                        user=account.token_owner or account.address, graph_host=rt.settings.microsoft.graph_host,
                        ca_bundle=rt.settings.ca_bundle)


def open_mailbox(rt, session: Session, account: Account) -> GraphTransport:
    account_id = account.id
    session.commit()

    def news() -> bool:
        with rt.db.session() as s:
            return notify_store.take_news(s, account_id)

    def known(message_ids: list[str]) -> set[str]:
        if not message_ids:
            return set()
        with rt.db.session() as s:
            return set(s.scalars(select(Article.message_id).where(Article.account_id == account_id,
                                                                  Article.message_id.in_(set(message_ids)))))
    graph = graph_mailbox(rt, account)

    def settle(graph_ids: list[str]) -> None:
        with rt.db.session() as s:
            action, folder = s.execute(select(Account.post_import_action, Account.move_to_folder)
                                       .where(Account.id == account_id)).one()
        if action == "keep" or not graph_ids:
            return
        try:
            graph.after_import(graph_ids, action, folder)
        except GraphError as exc:  # like sync/post_import.py: the mail is imported; logged, not fatal
            log.warning("%s: post-import action %s on mail imported before failed: %s", graph.address, action,
                        exc.message)
    return GraphTransport(graph, news=news, known=known, settle=settle, push=_push(rt, account_id, graph))


def open_submitter(rt, session: Session, account: Account) -> GraphSubmitter:
    session.commit()
    return GraphSubmitter(graph_mailbox(rt, account))


def forget_subscription(rt, session: Session, account: Account) -> bool:
    """A mailbox switched back to IMAP: delete its Graph subscription at Graph, then our record of it, so
    Graph stops calling about a folder nobody reads over Graph. True when there was one.

    Best effort, and without side effects on the mailbox: a Graph token that cannot be had (consent
    withdrawn) leaves the IMAP mailbox as it is, not "needs reconnect". A subscription that cannot be
    deleted expires on its own within its lifetime (at most three days), and its notifications are
    ignored once our record is gone (their clientState matches nothing)."""
    from ..mail.graph.subscriptions import SubscriptionManager
    from ..tokens import PURPOSES

    if account.provider != "microsoft" or notify_store.get(session, account.id) is None:
        return False
    token, why = tokens.probe_token(session, rt, account, PURPOSES[token_purpose(account)])
    if token is None:
        log.info("%s: no Graph token to delete its old subscription (%s); it expires on its own", account.address,
                 why[:200])
    session.commit()
    graph = None
    if token is not None:
        graph = graph_mailbox(rt, account, lambda force_refresh: token)
    try:
        SubscriptionManager(rt.db, rt.settings.app.base_url).drop(account.id, graph)
    finally:
        if graph is not None:
            graph.close()
    log.info("%s: read over IMAP now; its Graph subscription is forgotten", account.address)
    return True


__all__ = ["forget_subscription", "open_mailbox", "open_submitter", "token_purpose", "SendFailure"]


def prove_shared_access(rt, identity, connected, shared: str, folder: str) -> None:
    """The delegate's fresh Graph token must open the shared mailbox's folder (Full Access), as over IMAP
    (delegation.py); raises delegation.AccessRefused with the fix."""
    from ..delegation import AccessRefused, no_full_access
    from ..tokens import GRAPH_SHARED_SCOPES

    token, _ = identity.access_token(connected.token_cache, connected.home_account_id, GRAPH_SHARED_SCOPES)
    mailbox = GraphMailbox(shared, lambda force_refresh: token, shared=True, user=connected.username,
                           graph_host=rt.settings.microsoft.graph_host, ca_bundle=rt.settings.ca_bundle)
    try:
        try:
            mailbox.folder_info(folder or "Inbox")
        except GraphError as exc:
            if exc.code == "FolderNotFound" and (folder or "inbox").lower() != "inbox":
                mailbox.folder_info("Inbox")  # access is proven; the sync reports the folder setting
                return
            raise
    except GraphError as exc:
        if exc.status in (401, 403, 404) or exc.code in ("ErrorAccessDenied", "ErrorItemNotFound", "FolderNotFound"):
            log.info("shared mailbox %s refused delegate %s over Graph (%s)", shared, connected.username,
                     exc.code or exc.status)
            raise AccessRefused(no_full_access(connected.username, shared)) from None
        raise AccessRefused(f"Could not check {connected.username}'s access to {shared} over Microsoft Graph: "
                            f"{exc.message}") from None
    finally:
        mailbox.close()


def _push(rt, account_id: int, graph: GraphMailbox):
    """Change notifications for the mailbox when `[app] base_url` is public HTTPS (subscriptions.py): then the
    delta poll is only a safety net every `[worker] poll_interval_seconds`; otherwise it runs every few seconds."""
    from ..mail.graph.subscriptions import SubscriptionManager

    manager = SubscriptionManager(rt.db, rt.settings.app.base_url)
    dropped = []

    def push(folder: str) -> float | None:
        if manager.problem or graph.shared:
            if not dropped:  # no notifications here: forget a subscription of an earlier setting, once
                dropped.append(True)
                manager.drop(account_id, graph)
            return None
        try:
            state = manager.maintain(account_id, graph, folder)
        except GraphError as exc:
            log.info("%s: change notifications not maintained this time: %s", graph.address, exc.message)
            return None
        return float(rt.settings.worker.poll_interval_seconds) if state.active else None
    return push
