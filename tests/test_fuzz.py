"""Fuzzing the parser with mutated real-world mail (hypothesis, fixed seed).

Each example is a corpus mail (tests/corpus.py) with up to four mutations: truncation, byte flips, junk
inserted or a span deleted, broken boundaries, broken encodings (charset labels, transfer encodings, damaged
base64 and quoted-printable), giant headers, deep nesting and changed line endings. Every example is parsed
the way the sync parses it, in a worker process under the parse budget: ``parse_message`` and
``parse_headers`` never raise (their documented contract), the only error allowed is the budget's own
``ParseTimeout``, and it must not happen either. What they return must render.

How many examples: ``CONNECTOR_FUZZ_EXAMPLES`` (default 2000, about a minute and a half on 2 cores). The
examples are the same on every run (derandomized); ``CONNECTOR_FUZZ_SEED=<n>`` draws other ones. A long run:
``CONNECTOR_FUZZ_EXAMPLES=100000 CONNECTOR_FUZZ_SEED=7 .venv/bin/python -m pytest tests/test_fuzz.py``.
"""
from __future__ import annotations

import functools
import os
import re

import pytest
from hypothesis import HealthCheck, given, seed, settings
from hypothesis import strategies as st

from connector import parsing
from connector.mail.html import sanitize_html, text_to_html
from connector.mail.htmltext import html_to_text
from connector.mail.parse import MailHeaders, ParsedMail, parse_headers
from tests.corpus import corpus_names, load_mail

EXAMPLES = int(os.environ.get("CONNECTOR_FUZZ_EXAMPLES", "2000"))
SEED = os.environ.get("CONNECTOR_FUZZ_SEED")
BUDGET = parsing.DEFAULT_BUDGET
MAX_SIZE = 36 * 1024 * 1024

NAMES = corpus_names()


@functools.lru_cache(maxsize=None)
def corpus_mail(name: str) -> bytes:
    return load_mail(name).raw


# -- mutations: each a function of the mail and what hypothesis drew -------------------------------------
def _at(raw: bytes, where: float) -> int:
    return min(len(raw), int(len(raw) * where))


def truncate(raw: bytes, where: float) -> bytes:
    return raw[:_at(raw, where)]


def flip_bytes(raw: bytes, flips: list[tuple[float, int]]) -> bytes:
    data = bytearray(raw)
    for where, value in flips:
        if data:
            data[min(len(data) - 1, _at(raw, where))] = value
    return bytes(data)


JUNK = [b"--", b"\r", b"\n", b"\r\n\r\n", b"=?", b"?=", b"=?utf-8?b?", b"begin 644 x\n", b"<div>", b"=\n", b"\x00",
        b"\xff\xfe", b";", b'"', b"\\", b"Content-Type: multipart/mixed; boundary=z\n\n--z\n", b"--z--\n",
        b"Content-Transfer-Encoding: base64\n", b"\x1b$B", b"&#", b"<!--", b"\t", b"  "]


def insert(raw: bytes, where: float, junk: bytes) -> bytes:
    at = _at(raw, where)
    return raw[:at] + junk + raw[at:]


def delete(raw: bytes, where: float, length: float) -> bytes:
    at = _at(raw, where)
    return raw[:at] + raw[at + int(len(raw) * length * 0.2):]


BOUNDARY_RE = re.compile(rb'boundary\s*=\s*"?([^";\r\n]+)"?', re.I)


def break_boundary(raw: bytes, how: int, where: float) -> bytes:
    found = BOUNDARY_RE.findall(raw)
    if not found:
        return raw
    boundary = found[min(len(found) - 1, int(where * len(found)))]
    if how == 0:  # the declared boundary no longer matches its lines
        return raw.replace(b"boundary=\"" + boundary, b"boundary=\"x" + boundary, 1)
    if how == 1:  # the closing line is gone
        return raw.replace(b"--" + boundary + b"--", b"", 1)
    if how == 2:  # every separator line is gone
        return raw.replace(b"\n--" + boundary + b"\n", b"\n")
    if how == 3:  # separator lines where none belong
        return insert(raw, where, b"\n--" + boundary + b"\n")
    return raw.replace(b"--" + boundary, b"--" + boundary[: len(boundary) // 2])  # boundaries cut in half


CHARSETS = [b"utf-8", b"x-unknown", b"iso-2022-jp", b"utf-7", b"utf-16", b"gb2312", b"base64", b"", b"\"",
            b"x" * 200, b"iso-8859-1*en", b"koi8-r", b"hz-gb-2312", b"windows-874", b"ascii"]
ENCODINGS = [b"base64", b"quoted-printable", b"x-uuencode", b"8bit", b"bogus", b"BASE64 ", b"uuencode",
             b"Quoted_Printable", b"7bit", b""]


def break_encoding(raw: bytes, how: int, pick: int, where: float) -> bytes:
    if how == 0:
        return re.sub(rb"charset\s*=\s*\"?[^\";\s]*\"?", b"charset=" + CHARSETS[pick % len(CHARSETS)], raw, count=1,
                      flags=re.I)
    if how == 1:
        return re.sub(rb"(Content-Transfer-Encoding:)[^\r\n]*", rb"\1 " + ENCODINGS[pick % len(ENCODINGS)], raw,
                      count=1, flags=re.I)
    if how == 2:  # base64 lines with characters that do not belong
        return insert(raw, where, b"!*~\xc3")
    return insert(raw, where, b"=Z=\n=")  # quoted-printable escapes that are not


UNITS = ["=?utf-8?q?a?= ", "=?x?q?", "a@b ", "a", " ", "\t", ";", '"', "(", "<", ">", "=?", ",", "\\", "x=\"y;",
         "=?utf-8?b?w6k=?=", "\xe9", "<a@b>"]
HEADER_NAMES = ["Subject", "From", "To", "Cc", "References", "In-Reply-To", "Message-ID", "Content-Type",
                "Content-Disposition", "Date", "Received", "X-Junk", "Reply-To"]


def giant_header(raw: bytes, name: int, unit: int, count: int, fold: bool) -> bytes:
    value = UNITS[unit % len(UNITS)] * count
    if fold:
        value = "\r\n ".join(value[i:i + 900] for i in range(0, len(value), 900))
    header = f"{HEADER_NAMES[name % len(HEADER_NAMES)]}: {value}\r\n".encode("utf-8", "surrogateescape")
    return header + raw


def deep_nesting(raw: bytes, depth: int, closed: bool) -> bytes:
    opening = b"".join(b"Content-Type: multipart/mixed; boundary=\"n%d\"\r\n\r\n--n%d\r\n" % (n, n)
                       for n in range(depth))
    closing = b"".join(b"\r\n--n%d--\r\n" % n for n in reversed(range(depth))) if closed else b""
    return b"From: nest@example.com\r\nSubject: nested\r\n" + opening + raw + closing


def line_endings(raw: bytes, how: int) -> bytes:
    if how == 0:
        return raw.replace(b"\r\n", b"\n")
    if how == 1:
        return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    return raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r")  # old Mac


fraction = st.floats(0, 1)
MUTATIONS = st.one_of(
    st.tuples(st.just(truncate), fraction),
    st.tuples(st.just(flip_bytes), st.lists(st.tuples(fraction, st.integers(0, 255)), min_size=1, max_size=20)),
    st.tuples(st.just(insert), fraction, st.sampled_from(JUNK) | st.binary(min_size=1, max_size=64)),
    st.tuples(st.just(delete), fraction, fraction),
    st.tuples(st.just(break_boundary), st.integers(0, 4), fraction),
    st.tuples(st.just(break_encoding), st.integers(0, 3), st.integers(0, 100), fraction),
    st.tuples(st.just(giant_header), st.integers(0, 50), st.integers(0, 50), st.integers(1, 20_000), st.booleans()),
    st.tuples(st.just(deep_nesting), st.integers(1, 300), st.booleans()),
    st.tuples(st.just(line_endings), st.integers(0, 2)),
)


def mutated(name: str, mutations: list) -> bytes:
    raw = corpus_mail(name)
    for mutation, *args in mutations:
        raw = mutation(raw, *args)
    return raw


def _render(parsed: ParsedMail) -> None:
    text_to_html(parsed.body_text)
    if parsed.body_html is not None:
        html_to_text(parsed.body_html)
        sanitize_html(parsed.body_html, cid_url=lambda cid: f"/inline/{cid}")


# -- the test ----------------------------------------------------------------------------------------------
def _fuzz_settings(test):
    test = settings(max_examples=EXAMPLES, derandomize=SEED is None, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.large_base_example])(test)
    return seed(int(SEED))(test) if SEED is not None else test


@pytest.mark.skipif(not NAMES and not os.environ.get("CI"), reason="the corpus is not in ../shared/corpus")
@pytest.mark.timeout(0)  # a run is as long as CONNECTOR_FUZZ_EXAMPLES makes it; every example has its budget
@_fuzz_settings
@given(st.sampled_from(NAMES or ["missing"]), st.lists(MUTATIONS, max_size=4))
def test_mutated_mail_parses_within_the_budget_and_renders(name, mutations):
    raw = mutated(name, mutations)
    collect, pooled = parsing.start([raw], headers_only=False, max_size=MAX_SIZE, budget=BUDGET)
    [parsed] = collect()
    [headers] = parsing.start([raw], headers_only=True, max_size=MAX_SIZE, budget=BUDGET)[0]()
    assert pooled
    assert not isinstance(parsed, parsing.ParseTimeout), f"{name} {mutations!r}: over the {BUDGET} s budget"
    assert not isinstance(headers, parsing.ParseTimeout), f"{name} {mutations!r}: headers over the budget"
    assert isinstance(parsed, ParsedMail), f"{name} {mutations!r}: parse_message raised {parsed!r}"
    assert isinstance(headers, MailHeaders), f"{name} {mutations!r}: parse_headers raised {headers!r}"
    assert headers == parse_headers(raw)  # the header slice a worker is handed is all it takes
    assert isinstance(parsed.body_text, str) and all(isinstance(part.data, bytes) for part in parsed.attachments)
    _render(parsed)
