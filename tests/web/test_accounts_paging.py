"""The Mailboxes page in pages of mailbox_list.PAGE_SIZE, searchable by address (issue 11 item 6).

An installation of thousands of mailboxes: the page lists 50 at a time in address order, links the
pages before and after, finds a mailbox by any part of its address, and keeps every row's forms and
who may use them. Visibility is the same on every page and in every search: an agent sees the
mailboxes they own or are a member of, and nothing of the others (not their addresses, not a count
that includes them). The mailboxes are written straight into the database: connecting 120 through
the IdP would test the connect flow, which tests/web/test_accounts.py does.
"""
from __future__ import annotations

import html
import re

import pytest
from sqlalchemy import select

from connector.mailbox_list import PAGE_SIZE
from connector.models import Account, AccountMember
from tests.support.app import csrf_token, login

COUNT = 120  # three pages: 50, 50, 20


def _text(response) -> str:
    assert response.status_code == 200, response.status_code
    return response.get_data(as_text=True)


def _rows(page: str) -> list[str]:
    return re.findall(r'<tr data-address="([^"]+)"', page)


def _address(i: int) -> str:
    return f"box{i:04d}@contoso.test"


@pytest.fixture
def many(app, make_user):
    """Agent `owner` owns COUNT mailboxes; agent `member` is a member of three of them (one on each page)."""
    owner, member, other = make_user("agent"), make_user("agent"), make_user("agent")
    rt = app.extensions["connector"]
    with rt.db.session() as session:
        # inserted out of order: the page sorts them
        accounts = [Account(address=_address(i), connected_by_id=owner.id, status="connected")
                    for i in reversed(range(COUNT))]
        accounts.append(Account(address="elsewhere@fabrikam.test", connected_by_id=other.id, status="connected"))
        session.add_all(accounts)
        session.flush()
        ids = {a.address: a.id for a in accounts}
        for i in (7, 77, 107):
            session.add(AccountMember(account_id=ids[_address(i)], user_id=member.id))
        session.commit()
    return owner, member, other, ids


def _client(app, user):
    client = app.test_client()
    assert login(client, user.email).status_code == 302
    return client


def test_fifty_a_page_in_address_order_with_links_between_pages(app, many):
    owner, _, _, _ = many
    client = _client(app, owner)
    first = _text(client.get("/accounts"))
    assert _rows(first) == [_address(i) for i in range(PAGE_SIZE)] and PAGE_SIZE == 50
    assert f"{COUNT} mailboxes, 1&ndash;50 shown." in first
    assert "Page 1 of 3" in first and 'rel="prev"' not in first
    assert 'rel="next" href="/accounts?page=2"' in first

    second = _text(client.get("/accounts?page=2"))
    assert _rows(second) == [_address(i) for i in range(50, 100)]
    assert 'rel="prev" href="/accounts"' in second and 'rel="next" href="/accounts?page=3"' in second
    third = _text(client.get("/accounts?page=3"))
    assert _rows(third) == [_address(i) for i in range(100, COUNT)] and 'rel="next"' not in third
    assert "Page 3 of 3" in third and "101&ndash;120 shown" in third
    # past the end (its last mailbox was just disconnected, say): the last page, not an empty one
    assert _rows(_text(client.get("/accounts?page=9"))) == _rows(third)


def test_a_mailbox_on_page_two_is_reachable_with_its_forms(app, many):
    """Its row has every form the owner has on page 1, and using one returns to page 2."""
    owner, _, _, ids = many
    client = _client(app, owner)
    target = _address(60)
    assert target not in _text(client.get("/accounts"))
    page = _text(client.get("/accounts?page=2"))
    row = re.search(rf'<tr data-address="{re.escape(target)}".*?</tr>', page, re.S).group(0)
    account_id = ids[target]
    for action in ("settings", "members", "reconnect", "disconnect", "transport"):
        assert f'action="/accounts/{account_id}/{action}"' in row, action
    assert row.count('<input type="hidden" name="back_page" value="2">') >= 4

    prefix = f"a{account_id}-"
    token = csrf_token(page)
    response = client.post(f"/accounts/{account_id}/settings", data={
        "csrf_token": token, prefix + "csrf_token": token, prefix + "folder": "Support",
        prefix + "post_import_action": "mark_read", prefix + "move_to_folder": "", "back_page": "2"})
    assert response.status_code == 302 and response.headers["Location"] == "/accounts?page=2"
    with app.extensions["connector"].db.session() as session:
        saved = session.get(Account, account_id)
        assert (saved.folder, saved.post_import_action) == ("Support", "mark_read")
    assert f"Settings of {target} saved." in _text(client.get("/accounts?page=2"))

    # a search is kept the same way; a forged back_page is not a way to a 500
    response = client.post(f"/accounts/{account_id}/members", data={
        "csrf_token": token, "email": "nobody@helpdesk.test", "back_q": "box006", "back_page": "²"})
    assert response.headers["Location"] == "/accounts?q=box006"


def test_search_by_any_part_of_the_address(app, many, admin):
    owner, _, _, _ = many
    client = _client(app, owner)
    page = _text(client.get("/accounts?q=box007"))
    assert _rows(page) == [_address(i) for i in range(70, 80)]
    assert "10 mailboxes with &ldquo;box007&rdquo; in the address." in page and "Page 1 of" not in page
    assert 'value="box007"' in page and 'href="/accounts">Show all</a>' in page
    assert _rows(_text(client.get("/accounts?q=BOX0042@Contoso"))) == [_address(42)]
    # % and _ are letters here, not LIKE's wildcards
    assert _rows(_text(client.get("/accounts?q=box%25"))) == [] and _rows(_text(client.get("/accounts?q=b_x"))) == []
    empty = _text(client.get("/accounts?q=fabrikam"))  # another agent's mailbox
    assert _rows(empty) == [] and "No mailbox you can see has &ldquo;fabrikam&rdquo; in its address." in empty
    assert "elsewhere@fabrikam.test" not in empty
    # a search that spans pages keeps the search in the page links
    wide = _text(client.get("/accounts?q=contoso"))
    assert 'rel="next" href="/accounts?q=contoso&amp;page=2"' in wide
    assert _rows(_text(client.get("/accounts?q=contoso&page=3"))) == [_address(i) for i in range(100, COUNT)]
    # admins search every mailbox
    assert _rows(_text(_client(app, admin).get("/accounts?q=fabrikam"))) == ["elsewhere@fabrikam.test"]
    # the query string is read strictly: a sentence, not a 500
    for bad in ("q=box%00", "page=0", "page=%C2%B2", "page=99999999999999999999"):
        response = client.get(f"/accounts?{bad}")
        assert response.status_code == 400, bad


def test_a_member_never_sees_other_mailboxes_on_any_page(app, many):
    _, member, _, ids = many
    client = _client(app, member)
    mine = [_address(7), _address(77), _address(107)]
    for query in ("", "?page=2", "?page=3", "?q=box", "?q=box&page=2", "?q=contoso", "?q=box00"):
        page = html.unescape(_text(client.get(f"/accounts{query}")))
        shown = _rows(page)
        assert set(shown) <= set(mine), (query, shown)
        others = [a for a in ids if a not in mine and a in page]
        assert others == [], (query, others[:3])
        assert "Page 2" not in page and str(COUNT) not in page.replace("box0", "")
    assert _rows(_text(client.get("/accounts"))) == mine
    assert "3 mailboxes." in _text(client.get("/accounts"))
    assert _rows(_text(client.get("/accounts?q=box01"))) == [_address(107)]
    # and a member sees the row without the owner's forms, on every page
    page = _text(client.get("/accounts"))
    assert page.count('<small class="muted">member</small>') == 3 and "/settings" not in page


def test_no_mailboxes_yet_has_no_search(app, agent):
    page = _text(_client(app, agent).get("/accounts"))
    assert "No mailboxes yet." in page and 'id="mailbox-search"' not in page and 'class="pager"' not in page


def test_the_page_is_bounded_by_its_page_size(app, many, admin):
    """The work per request does not grow with the installation: the rows rendered are one page's."""
    client = _client(app, admin)
    page = _text(client.get("/accounts"))
    assert len(_rows(page)) == PAGE_SIZE and page.count("<summary>Settings</summary>") == PAGE_SIZE
    with app.extensions["connector"].db.session() as session:
        assert len(session.scalars(select(Account.id)).all()) == COUNT + 1


def test_the_ticket_filter_is_a_field_past_fifty_mailboxes(app, many):
    """A menu of every mailbox would weigh on every ticket list of an admin of thousands: past the menu's
    limit the filter takes the address instead, and filters the same; fewer mailboxes keep the menu."""
    from connector.web.tickets import MAILBOX_MENU_LIMIT

    owner, member, _, _ = many
    assert COUNT > MAILBOX_MENU_LIMIT
    page = _text(_client(app, owner).get("/tickets"))
    assert '<select name="account"' not in page and 'input type="search" name="account"' in page
    assert _address(77) not in page  # not listed anywhere
    assert _text(_client(app, owner).get(f"/tickets?account={_address(77)}")).count(f'value="{_address(77)}"') == 1
    page = _text(_client(app, member).get("/tickets"))
    assert '<select name="account"' in page and page.count("<option value=\"box") == 3
