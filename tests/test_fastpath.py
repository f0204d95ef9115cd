"""The parser's fast path (connector/mail/fastpath.py) gives what the stdlib path gives, on every corpus mail.

Two levels: the tree `read_simple` builds is the feed parser's tree (every part's headers, payload,
preamble, epilogue, default type and defects), and `parse_mail` gives the same `ParsedMail` as
`parse_message` (headers, body_text, body_html, attachments with their names, types, bytes, content ids
and inline flags, notes, display model). A mail the fast path does not take must come back as None, not
as a tree of its own; and most of the corpus must be taken, or the fast path has silently stopped working.
"""
from __future__ import annotations

import dataclasses
import random
import time

import pytest

from connector.mail.fastpath import parse_mail, read_simple
from connector.mail.feed import BoundedMessage
from connector.mail.headers import read_message
from connector.mail.parse import parse_message
from tests.corpus import CORPUS_DIR, corpus_names, load_mail
from tests.support.mail import make_mail

NAMES = corpus_names()
pytestmark = pytest.mark.skipif(not NAMES, reason=f"the mail corpus is not at {CORPUS_DIR}")
TAKEN_AT_LEAST = 98  # of the 108 corpus mails (101 when this was written; 91 before forwarded mails and bounces were)


def tree(msg) -> tuple:
    payload = msg._payload
    return (isinstance(msg, BoundedMessage), msg._headers, msg._unixfrom, msg.preamble, msg.epilogue, msg.get_default_type(),
            [type(d).__name__ for d in msg.defects],
            [tree(part) for part in payload] if isinstance(payload, list) else payload)


@pytest.mark.parametrize("name", NAMES)
def test_the_fast_path_gives_what_the_stdlib_gives(name):
    raw = load_mail(name).raw
    fast = read_simple(raw)
    if fast is not None:
        assert tree(fast) == tree(read_message(raw))
    assert parse_mail(raw) == parse_message(raw)
    # Body extraction parses without the headers (read at import): the rest is the same.
    assert parse_mail(raw, headers=False) == dataclasses.replace(parse_message(raw), headers=None)


def test_most_of_the_corpus_takes_the_fast_path():
    taken = [name for name in NAMES if read_simple(load_mail(name).raw) is not None]
    assert len(taken) >= TAKEN_AT_LEAST, f"only {len(taken)} corpus mails took the fast path"


def _multipart(body: str, boundary: str = "b1") -> bytes:
    return (f'From: a@example.com\r\nTo: b@example.com\r\nSubject: s\r\nMIME-Version: 1.0\r\n'
            f'Content-Type: multipart/mixed; boundary="{boundary}"\r\n\r\n{body}').encode()


SIMPLE = ("preamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\nHello\r\n"
          "--b1\r\nContent-Type: application/pdf; name=x.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
          "JVBERi0=\r\n--b1--\r\nepilogue\r\n")


FORWARDED = ("--b1\r\nContent-Type: text/plain\r\n\r\nsee below\r\n"
             "--b1\r\nContent-Type: message/rfc822\r\n\r\nFrom: c@example.com\r\nSubject: inner\r\n\r\n"
             "--b2\r\nContent-Type: text/plain\r\n\r\nplain\r\n--b2\r\nContent-Type: text/html\r\n\r\n<p>html</p>\r\n"
             "--b2--\r\n\r\n--b1--\r\n")
BOUNCE = ("--b1\r\nContent-Type: text/plain\r\n\r\nundeliverable\r\n"
          "--b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.com\r\n"
          "Arrival-Date: Mon, 1 Jan 2024 00:00:00 +0000\r\n\r\nFinal-Recipient: rfc822; x@example.com\r\n"
          "Action: failed\r\nStatus: 5.1.1\r\n"
          "--b1\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: a@example.com\r\n--b1--\r\n")


@pytest.mark.parametrize("raw, taken", [
    (_multipart(SIMPLE), True),
    (make_mail(to="b@example.com", body="plain text"), True),
    (_multipart(SIMPLE.replace("--b1--", "--b1-- ")), True),  # white space after the closing boundary
    (_multipart(SIMPLE.replace("--b1--\r\nepilogue\r\n", "")), True),  # no closing boundary: cut short
    (_multipart(SIMPLE[:SIMPLE.index("--b1\r\nContent-Type: application")] + "--b1\r\n"), False),  # ends on one
    (_multipart(SIMPLE.replace("preamble\r\n--b1\r\n", "")), True),  # the first part becomes the preamble
    (_multipart("no boundary line at all\r\n"), False),
    (_multipart(SIMPLE.replace("Hello\r\n", "Hello\r\n--b1\r\n")), False),  # two boundary lines in a row
    (_multipart(SIMPLE.replace("Hello", "He\rllo")), False),  # a lone CR (a line break to the feed parser)
    (_multipart(SIMPLE.replace("Content-Type: text/plain\r\n", "Content-Type: text/plain\r\nnot a field\r\n")),
     False),
    (_multipart(SIMPLE.replace("Content-Type: text/plain", "Content-Type: message/rfc822")), False),
    (_multipart(SIMPLE, boundary="b1").replace(b"multipart/mixed", b"multipart/digest"), False),
    (_multipart("--b1\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n\r\nx\r\n--b1--\r\n--b1--\r\n"),
     False),  # a boundary reused inside its own multipart
    (_multipart(FORWARDED), True),
    (_multipart(FORWARDED.replace("Subject: inner", "Content-Type: multipart/alternative; boundary=b2")), True),
    (_multipart(FORWARDED.replace("Subject: inner", "Content-Type: multipart/alternative; boundary=b2")
                .replace("--b2--\r\n", "")), True),  # the forwarded multipart cut short
    (_multipart(FORWARDED.replace("From: c@example.com", "From c@example.com Mon Jan  1 00:00:00 2024")), False),
    (_multipart(FORWARDED.replace("Content-Type: message/rfc822", "Content-Type: message/rfc822\r\n"
                                  "Content-Transfer-Encoding: base64")), True),
    (_multipart(BOUNCE), True),
    (_multipart(BOUNCE.replace("Status: 5.1.1\r\n", "Status: 5.1.1\r\n\r\n\r\n")), True),  # empty blocks at the end
    (_multipart(BOUNCE.replace("Action: failed", "Action: failed\r\n\r\n")), True),  # an empty block between
    (_multipart(BOUNCE.replace("Action: failed", "not a field")), False),
    (_multipart(BOUNCE.replace("Reporting-MTA", " Reporting-MTA")), False),  # a continuation with no field
])
def test_only_simply_built_mails_take_the_fast_path_and_they_read_the_same(raw, taken):
    fast = read_simple(raw)
    assert (fast is not None) == taken
    if fast is not None:
        assert tree(fast) == tree(read_message(raw))
    assert parse_mail(raw) == parse_message(raw)


def _mutations(raw: bytes, rnd: random.Random, count: int):
    """Line-level damage real mail shows: lines dropped, doubled or cut, a boundary line's dashes or line
    break changed, the mail cut short."""
    lines = raw.split(b"\n")
    for _ in range(count):
        mutated = list(lines)
        for _ in range(rnd.randint(1, 3)):
            i = rnd.randrange(len(mutated))
            kind = rnd.randrange(6)
            if kind == 0:
                del mutated[i]
            elif kind == 1:
                mutated.insert(i, mutated[i])
            elif kind == 2:
                mutated[i] = mutated[i][:rnd.randrange(len(mutated[i]) + 1)]
            elif kind == 3:
                mutated[i] = mutated[i] + b"--" if mutated[i].startswith(b"--") else b"--" + mutated[i]
            elif kind == 4:
                mutated[i] = mutated[i].rstrip(b"\r") + b"\r\r"
            else:
                mutated = mutated[:i + 1]
        yield b"\n".join(mutated)


@pytest.mark.parametrize("name", NAMES[::4])
def test_damaged_corpus_mails_read_the_same_either_way(name):
    rnd = random.Random(name)
    for raw in _mutations(load_mail(name).raw, rnd, 12):
        fast = read_simple(raw)
        if fast is not None:
            assert tree(fast) == tree(read_message(raw))
        assert parse_mail(raw) == parse_message(raw)
        assert parse_mail(raw, headers=False) == dataclasses.replace(parse_message(raw), headers=None)


@pytest.mark.parametrize("raw", [
    b"From: a@b\nSubject: x\n" + b" y\n" * 200_000 + b"\nbody\n",  # 200,000 continuation lines
    b"From: a@b\nX: " + b"a" * 2_000_000,  # a 2 MB field with no line break after it
    b"From: a@b\nX: a\n " + b"a" * 2_000_000,  # the same as a continuation line
    b"X: a\n" * 200_000 + b"junk line\n\nbody",  # 200,000 fields, then a line that is not one
], ids=["continuations", "long-field", "long-continuation", "fields-then-junk"])
def test_the_fast_path_reads_header_blocks_in_linear_time(raw):
    """The fields are found by regular expressions over the whole block (fastpath._FIELDS_RE): no input may make
    them backtrack more than a line at a time."""
    started = time.perf_counter()
    read_simple(raw)
    assert time.perf_counter() - started < 2.0
