"""Reading a mailbox over Graph: delta rounds and their cursor, expiry, MIME bytes, post-import actions."""
from __future__ import annotations

from urllib.parse import unquote

import pytest

from connector.mail.graph import GraphError, GraphMailbox
from tests.corpus import CORPUS_DIR, corpus_names
from tests.graph.model import new_immutable_id
from tests.support.mail import make_mail

pytestmark = pytest.mark.filterwarnings("ignore:response_mode:UserWarning")


def deliver(graph, address: str, count: int, folder: str = "inbox", prefix: str = "M") -> list[bytes]:
    mails = [make_mail(to=address, subject=f"{prefix}{i}") for i in range(count)]
    for raw in mails:
        graph.deliver(address, raw, folder=folder)
    return mails


def read_round(mailbox: GraphMailbox, cursor: str | None, folder: str = "Inbox", page_size: int = 100):
    """(messages, final cursor, pages) of one delta round, as the sync would take them."""
    pages = list(mailbox.delta_pages(folder, cursor, page_size=page_size))
    return [m for p in pages for m in p.messages], pages[-1].cursor, pages


def delta_requests(graph, address: str):
    return [r for r in graph.requests_for(address) if r.path.endswith("/messages/delta")]


def test_delta_pages_follow_next_links_to_the_delta_link(graph, mailbox, alice) -> None:
    deliver(graph, alice, 25)
    graph.clear_log()
    messages, cursor, pages = read_round(mailbox, None, page_size=10)
    assert [len(p.messages) for p in pages] == [10, 10, 5]
    assert [p.done for p in pages] == [False, False, True]
    assert all(p.restarted for p in pages)  # no cursor yet: a first round reads the whole folder
    assert len({m.id for m in messages}) == 25
    wanted = {m.internet_message_id for m in graph.messages(alice)}
    assert {m.internet_message_id for m in messages} == wanted and all(m.received for m in messages)
    first = delta_requests(graph, alice)[0]
    assert "$select=id,internetMessageId,receivedDateTime&changeType=created" == unquote(first.query)
    # the next round: only what arrived since, then nothing
    deliver(graph, alice, 2, prefix="new")
    newer, cursor, pages = read_round(mailbox, cursor)
    assert len(newer) == 2 and not any(p.restarted for p in pages)
    nothing, _, pages = read_round(mailbox, cursor)
    assert nothing == [] and pages[-1].done


def test_read_and_moved_mail_is_not_new_again(graph, mailbox, alice) -> None:
    deliver(graph, alice, 3)
    messages, cursor, _ = read_round(mailbox, None)
    mailbox.mark_read([messages[0].id])
    mailbox.delete([messages[1].id])  # a removal: Graph reports it as @removed, which is no import
    again, cursor, _ = read_round(mailbox, cursor)
    assert again == []
    graph.deliver(alice, make_mail(to=alice, subject="moved in"), folder="archive")
    archived = graph.messages(alice, "archive")[0]
    mailbox.move([archived.immutable_id], "Inbox")  # moved into the folder: new there
    again, _, _ = read_round(mailbox, cursor)
    assert [m.internet_message_id for m in again] == [archived.internet_message_id]


def test_the_cursor_survives_a_restart(graph, open_mailbox, alice, graph_org) -> None:
    deliver(graph, alice, 12)
    first = open_mailbox(alice, graph_org.token_source(alice))
    pages = first.delta_pages("inbox", None, page_size=5)
    page = next(pages)  # a worker imports one page, stores its cursor, and is killed
    stored = page.cursor
    first.close()
    second = open_mailbox(alice, graph_org.token_source(alice))  # a new process: only the stored text
    rest, cursor, pages = read_round(second, stored, folder="inbox", page_size=5)
    assert len(rest) == 7 and not any(p.restarted for p in pages)
    assert {m.id for m in rest}.isdisjoint(m.id for m in page.messages)
    deliver(graph, alice, 1, prefix="later")
    third = open_mailbox(alice, graph_org.token_source(alice))
    later, _, pages = read_round(third, cursor, folder="inbox")
    assert len(later) == 1 and not pages[0].restarted


@pytest.mark.parametrize("resync", [False, True], ids=["syncStateNotFound", "resyncRequired"])
def test_an_expired_delta_token_restarts_the_folder_without_duplicates(graph, mailbox, alice, resync) -> None:
    deliver(graph, alice, 4)
    imported: dict[str, str] = {}  # Message-ID -> id: the sync's dedup

    def sync(cursor):
        messages, cursor, pages = read_round(mailbox, cursor)
        fresh = [m for m in messages if m.internet_message_id not in imported]
        for message in fresh:
            imported[message.internet_message_id] = message.id
        return fresh, cursor, pages

    _, cursor, _ = sync(None)
    deliver(graph, alice, 1, prefix="after")
    graph.expire_delta_tokens(alice, resync=resync)
    fresh, cursor, pages = sync(cursor)
    assert pages[0].restarted  # the whole folder again: 5 mails, of which 1 new
    assert sum(len(p.messages) for p in pages) == 5
    assert [m.internet_message_id for m in fresh] == [graph.messages(alice)[-1].internet_message_id]
    assert len(imported) == 5
    refused = [r for r in delta_requests(graph, alice) if r.status == 410]
    assert [r.code for r in refused] == ["resyncRequired" if resync else "syncStateNotFound"]
    assert sync(cursor)[0] == []  # and the new cursor works


def test_a_cursor_of_another_folder_starts_afresh(graph, mailbox, alice) -> None:
    deliver(graph, alice, 2)
    deliver(graph, alice, 1, folder="archive", prefix="A")
    _, inbox_cursor, _ = read_round(mailbox, None, folder="Inbox")
    archived, _, pages = read_round(mailbox, inbox_cursor, folder="Archive")  # the setting changed
    assert pages[0].restarted and len(archived) == 1


def test_a_cursor_for_another_host_never_gets_the_token(graph, mailbox, alice) -> None:
    deliver(graph, alice, 1)
    _, cursor, _ = read_round(mailbox, None)
    folder, _, link = cursor.partition(" ")
    forged = f"{folder} https://attacker.example/v1.0/me/mailFolders('{folder}')/messages/delta?$deltatoken=x"
    graph.clear_log()
    messages, _, pages = read_round(mailbox, forged)
    assert pages[0].restarted and len(messages) == 1  # read afresh from the configured host instead
    assert all(r.path.startswith("/v1.0/me/") for r in graph.requests_for(alice))
    with pytest.raises(GraphError) as refused:
        mailbox.http.get_json("https://attacker.example/v1.0/me/messages")
    assert refused.value.code == "ForeignLink" and "was not followed" in refused.value.message


def test_mime_is_fetched_byte_for_byte(graph, mailbox, alice) -> None:
    names = corpus_names()
    assert len(names) > 100
    raws = [(CORPUS_DIR / f"{name}.box").read_bytes() for name in names]
    for raw in raws:
        graph.deliver(alice, raw)
    messages, _, _ = read_round(mailbox, None, page_size=1000)
    by_id = {m.immutable_id: m.raw for m in graph.messages(alice)}
    fetched = list(mailbox.fetch_mime([m.id for m in messages]))
    assert [key for key, _ in fetched] == [m.id for m in messages]  # in the order asked
    assert all(raw == by_id[key] for key, raw in fetched)
    assert sorted(raw for _, raw in fetched) == sorted(raws)


def test_mail_gone_before_its_fetch_is_skipped(graph, mailbox, alice) -> None:
    deliver(graph, alice, 2)
    messages, _, _ = read_round(mailbox, None)
    gone = new_immutable_id()  # listed by a delta page, then removed for good before its fetch
    fetched = [key for key, _ in mailbox.fetch_mime([messages[0].id, gone, messages[1].id])]
    assert fetched == [messages[0].id, messages[1].id]
    assert [r.code for r in graph.requests_for(alice) if r.status == 404] == ["ErrorItemNotFound"]


def test_mark_read_move_creating_the_folder_and_delete(graph, mailbox, alice) -> None:
    deliver(graph, alice, 4)
    messages, _, _ = read_round(mailbox, None)
    ids = [m.id for m in messages]
    mailbox.after_import(ids[:1], "mark_read")
    assert graph.mailbox(alice).messages[ids[0]].is_read
    mailbox.after_import(ids[1:3], "move", "Archive/2026/Tickets")  # two levels created
    target = graph.mailbox(alice)
    archive = target.folder("archive")
    year = next(f for f in target.children(archive.folder_id) if f.display_name == "2026")
    tickets = next(f for f in target.children(year.folder_id) if f.display_name == "Tickets")
    assert {m.immutable_id for m in target.in_folder(tickets.folder_id)} == set(ids[1:3])
    mailbox.after_import(ids[3:], "delete")
    assert [m.immutable_id for m in graph.messages(alice, "deleteditems")] == ids[3:]
    assert graph.messages(alice) == [target.messages[ids[0]]]
    # again, on mail already moved or deleted: nothing to do, no error
    mailbox.after_import(ids[1:3], "move", "archive/2026/tickets")
    mailbox.after_import(ids[1:2], "keep")
    assert len(target.children(year.folder_id)) == 1  # found by name, not created twice


def test_folders_by_well_known_name_and_path(graph, mailbox, alice) -> None:
    graph.create_folder(alice, "Escalations", parent="inbox")
    assert mailbox.folder_id("INBOX") == graph.folder_id(alice, "inbox")
    assert mailbox.folder_id("Sent Items") == graph.folder_id(alice, "sentitems")
    assert mailbox.folder_id("Inbox/escalations") == graph.folder_id(alice, "Escalations")
    info = mailbox.folder_info("inbox")
    assert (info.display_name, info.total) == ("Inbox", 0)
    with pytest.raises(GraphError) as missing:
        mailbox.folder_id("Projects/Old")
    assert missing.value.code == "FolderNotFound" and missing.value.permanent
    assert 'There is no folder "Projects/Old" in ' + alice in missing.value.message


def test_a_shared_mailbox_is_read_with_full_access_only(graph, open_mailbox, shared_setup, graph_org) -> None:
    delegate, shared, token = shared_setup
    deliver(graph, shared, 2)
    mailbox = open_mailbox(shared, token, shared=True, user=delegate)
    with pytest.raises(GraphError) as refused:
        read_round(mailbox, None)
    assert refused.value.permanent and not refused.value.reconnect
    assert refused.value.message.startswith(f"{delegate} has no Full Access to {shared}")
    assert f"Add-MailboxPermission -Identity {shared} -User {delegate} -AccessRights FullAccess" \
        in refused.value.message
    graph_org.idp.grant_mailbox_access(delegate, shared)
    messages, _, _ = read_round(mailbox, None)
    assert len(messages) == 2
    assert all(unquote(r.path).startswith(f"/v1.0/users/{shared}/") for r in graph.requests_for(shared))
    assert len(list(mailbox.fetch_mime([m.id for m in messages]))) == 2
