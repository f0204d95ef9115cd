"""Mail built to stall the parser or the renderers, through the real code, each step under a bound.

Every step runs in a worker process (connector/mail/budget.py) that is stopped at the bound, so code that is
not linear fails these tests instead of hanging them. The bounds are generous for a loaded 2-core machine
and far below what the quadratic code took on the same inputs (a 2 MB line: hours to render; 1 MB of
spaces: a quarter of an hour to parse; 64 KB of References: about 10 s; see the README)."""
from __future__ import annotations

import functools
import time

import pytest

from connector.mail import budget
from connector.mail.charsets import _codec_chain, codec_chain, decode_text
from connector.mail.headers import decode_words, parse_msgids
from connector.mail.sanitize import INLINE_TEXT_LIMIT, MAX_QUOTE_DEPTH, sanitize_html, text_to_html
from connector.mail.htmltext import html_to_text
from connector.mail.mime import extract_uu_blocks, uudecode
from connector.mail.parse import ParsedMail, parse_headers, parse_message
from tests.support import hostile

MB = 1024 * 1024
WALL_FACTOR = 6  # wall-time stop, in bounds: a hang ends there
TO = "support@example.com"


def _timed(fn, arg):
    """In the worker process: fn(arg) and the CPU seconds it took there."""
    started = time.process_time()
    result = fn(arg)
    return result, time.process_time() - started


def within(seconds: float, fn, arg):
    """fn(arg) in a worker process: the result, or a failed test when it took over `seconds` of CPU.

    CPU time, not wall time, so a loaded machine (other test processes on the same cores) does not fail a
    linear step; the process is stopped after WALL_FACTOR times the bound of wall time, so a hang fails too."""
    name = getattr(fn, "__name__", None) or getattr(getattr(fn, "func", None), "__name__", repr(fn))
    [outcome] = budget.shared_pool(budget.DEFAULT_SIZE).map(functools.partial(_timed, fn), [arg],
                                                             budget=seconds * WALL_FACTOR).result()
    assert not isinstance(outcome, budget.Overrun), f"{name} ran over {seconds * WALL_FACTOR} s of wall time"
    assert not isinstance(outcome, Exception), outcome
    result, cpu = outcome
    assert cpu <= seconds, f"{name} took {cpu:.2f} s of CPU, over {seconds} s"
    return result


parse = functools.partial(parse_message, max_size=64 * MB)
render_all = functools.partial(text_to_html, limit=None)


# -- the four hostile mails ------------------------------------------------------------------------------
def test_a_2_mb_single_line_text_mail_parses_and_renders():
    raw = hostile.long_line_text(TO)
    parsed: ParsedMail = within(10, parse, raw)
    assert parsed.body_text == "a" * (2 * MB) and parsed.notes == []
    assert within(5, parse_headers, raw).subject == "One very long line"
    shown = within(5, text_to_html, parsed.body_text)
    assert shown.startswith("a" * INLINE_TEXT_LIMIT) and "a" * (INLINE_TEXT_LIMIT + 1) not in shown
    assert "first 200,000 of its 2,097,152 characters" in shown
    assert within(10, render_all, parsed.body_text) == "a" * (2 * MB)  # the linkifier itself is linear


def test_1_mb_of_whitespace_in_html_parses_and_renders():
    raw = hostile.whitespace_html(TO)
    parsed: ParsedMail = within(10, parse, raw)
    assert parsed.body_text == "before after"
    assert len(parsed.body_html) > MB
    clean = sanitize_html(parsed.body_html)  # in a worker process itself (over 16 KB), under its own budget
    assert "before" in clean.html and "after" in clean.html and "too complex" not in clean.html
    assert within(10, html_to_text, parsed.body_html.replace(" ", "\t")) == "before after"


def test_a_64_kb_references_header_without_brackets_parses():
    raw = hostile.references_without_brackets(TO)
    parsed: ParsedMail = within(3, parse, raw)
    assert parsed.headers.references == [] and parsed.headers.in_reply_to == []
    assert parsed.body_text == "The headers are the problem here."
    assert within(3, parse_headers, raw).subject == "Long references"
    # Bare ids are still read where a gateway dropped the brackets, from a long header too.
    ids = " ".join(f"m{n}@example.net" for n in range(4000))
    assert within(3, parse_msgids, ids)[-1] == "<m3999@example.net>"
    assert within(3, parse_msgids, "x" * 200_000 + "@" + "y" * 200_000) == []  # over 998 characters


def test_10_000_nested_parts_parse_into_one_opaque_attachment():
    raw = hostile.nested_parts(TO)
    parsed: ParsedMail = within(10, parse, raw)
    assert "MIME nesting too deep: innermost parts kept as one attachment" in parsed.notes
    [kept] = parsed.attachments
    assert b"The innermost part." in kept.data and kept.content_type == "multipart/mixed"
    assert within(5, parse_headers, raw).subject == "10000 nested parts"


# -- the other places that were not linear --------------------------------------------------------------
def test_encoded_words_by_the_ten_thousand():
    unfinished = "=?utf-8?q?a" * 20_000  # no "?=": the stdlib's pattern scanned to the end from every start
    assert within(5, decode_words, unfinished) == unfinished
    many = "=?utf-8?q?caf=C3=A9?= " * 20_000  # the stdlib joins them with bytes +=, pops lists from the front
    assert within(5, decode_words, many) == "café" * 20_000 + " "


def test_parameters_by_the_ten_thousand():
    for header in ('Content-Type: text/plain; name="' + ";" * 60_000,  # an unclosed quote full of ";"
                   "Content-Type: text/plain" + "; a=b" * 15_000,
                   "Content-Disposition: attachment" + "".join(f"; filename*{n}=x" for n in range(4000))):
        part = f"--b\n{header}\n\nbody\n".encode()
        raw = b"From: a@example.com\nSubject: params\nContent-Type: multipart/mixed; boundary=b\n\n" \
            + part * 20 + b"--b--\n"
        assert within(5, parse, raw).headers.subject == "params"


def test_uuencode_begin_lines_with_a_megabyte_of_spaces():
    body = b"begin 644 " + b" " * MB + b"x\ry\n"
    assert within(5, extract_uu_blocks, body) == (body, [])
    assert within(5, uudecode, b"begin 644 a" + b" " * MB + b"x")[0] == "a" + " " * MB + "x"
    raw = (b"From: a@example.com\nSubject: uu\nContent-Type: application/octet-stream\n"
           b"Content-Transfer-Encoding: x-uuencode\n\nbegin 644 a" + b" " * MB + b"x")
    assert within(5, parse, raw).headers.subject == "uu"


def test_deep_quoting_and_long_links_render_bounded():
    quoted = within(5, render_all, ">" * MB + " deep")
    assert quoted.count("<blockquote") == MAX_QUOTE_DEPTH and quoted.endswith("</blockquote>" * MAX_QUOTE_DEPTH)
    link = within(5, render_all, "see https://example.com/" + ")" * MB)  # trailing ")" weighed one by one
    assert 'href="https://example.com/"' in link
    assert within(5, render_all, "a" * MB + "@example.com").count("mailto:") == 1


@pytest.mark.timeout(120)
def test_nested_html_is_shown_as_text_when_the_sanitiser_cannot_finish():
    """nh3's HTML5 tree builder is quadratic in nesting (500 KB of <div>: minutes): its budget stops it.
    (sanitize_html runs big HTML in a worker process itself, so it is called directly here.)"""
    clean = sanitize_html("<div>" * 100_000 + "deep text")
    assert "too complex to show safely" in clean.html and "deep text" in clean.html
    assert clean.blocked_remote_images == 0


def test_long_character_references_and_charset_labels():
    assert within(5, html_to_text, "&#" + "1" * 10_000 + ";x") == "\ufffdx"  # beyond int's 4300 digits
    cached = _codec_chain.cache_info().currsize
    for n in range(100):
        assert codec_chain(f"{n}" + "x" * 100_000) == (("utf-8",), False)  # not looked up
    assert _codec_chain.cache_info().currsize == cached  # nor kept
    assert decode_text(b"caf\xc3\xa9", "x" * 100_000) == "café"


def test_a_large_iso_2022_jp_body_decodes_quickly():
    jis = b"\x1b$B" + b"-!" * (4 * MB) + b"\x1b(B\n"  # NEC row 13: iso2022_jp fails, our cp932 path decodes
    raw = b"From: a@example.com\nSubject: jis\nContent-Type: text/plain; charset=iso-2022-jp\n\n" + jis
    assert within(10, parse, raw).body_text.startswith("\u2460" * 100)  # linear before too, but 10x slower


def test_megabytes_of_short_lines_cost_little_each():
    flat = b"From: a@example.com\nSubject: lines\n\n" + b"x\n" * (8 * MB)
    assert within(5, parse, flat).body_text.count("x") == 8 * MB
    nested = b"".join(b"Content-Type: multipart/mixed; boundary=n%d\n\n--n%d\n" % (n, n) for n in range(38))
    raw = b"From: a@example.com\nSubject: deep lines\n" + nested + b"Content-Type: text/plain\n\n" + b"x\n" * (4 * MB)
    assert within(10, parse, raw).body_text.count("x") == 4 * MB  # 38 boundaries were tried on every line


def test_megabytes_of_address_header():
    raw = b"From: a@example.com\nSubject: to\nTo: " + b"@" * (2 * MB) + b"\nCc: " + b"<" * (2 * MB) + b"\n\nx\n"
    parsed = within(5, parse, raw)
    assert parsed.headers.subject == "to" and parsed.headers.to == [] and parsed.headers.cc == []


def test_many_parts_cost_little_each():
    small = b"--b\nContent-Type: text/plain\n\nline\n"  # 250,000 parts: split off up to 10,000
    raw = b"From: a@example.com\nSubject: parts\nContent-Type: multipart/mixed; boundary=b\n\n" \
        + small * (8 * MB // len(small)) + b"--b--\n"
    parsed = within(6, parse, raw)
    assert "more MIME parts than the parser accepts: the rest was dropped" in parsed.notes
    long = b"--b\nContent-Type: text/plain\n\n" + b"line\n" * 1000
    raw = b"From: a@example.com\nSubject: parts\nContent-Type: multipart/mixed; boundary=b\n\n" \
        + long * (8 * MB // len(long)) + b"--b--\n"
    parsed = within(20, parse, raw)
    assert parsed.body_text.count("line") == 1000 * (8 * MB // len(long))
