"""Unit tests for connector.mail.parse: exact values for each robustness and loop-protection rule."""
from __future__ import annotations

import base64
import email.feedparser
import random
from datetime import datetime, timezone

import pytest

import connector.mail.parse as parse_module
from connector.mail.display import FORWARD_MARK
from connector.mail.parse import Address, Part, header_slice, parse_headers, parse_message


def msg(headers: str, body: bytes | str = b"Hello\n", *, crlf: bool = False) -> bytes:
    """A raw message from a header block written as text (8-bit allowed via latin-1)."""
    head = headers.strip("\n").encode("latin-1") if isinstance(headers, str) else headers
    data = head + b"\n\n" + (body.encode("latin-1") if isinstance(body, str) else body)
    return data.replace(b"\n", b"\r\n") if crlf else data


BASE = "From: Alice <alice@example.com>\nTo: support@example.com\nSubject: Hi\n"


# --- Message ids, threading ---------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("<abc.123@example.com>", "<abc.123@example.com>"),
    ("  <abc@example.com>  (comment)", "<abc@example.com>"),
    ("<abc@exa\n mple.com>", "<abc@example.com>"),           # folded inside the id
    ("20200123143934.05D7EE792E@example.com", "<20200123143934.05D7EE792E@example.com>"),
    ("garbage", None),
    ("<>", None),
])
def test_message_id_normalised(value: str, expected: str | None) -> None:
    assert parse_headers(msg(BASE + f"Message-ID: {value}\n")).message_id == expected


def test_message_id_missing() -> None:
    assert parse_headers(msg(BASE)).message_id is None


def test_in_reply_to_and_references() -> None:
    raw = msg(BASE + "In-Reply-To: Your message of Monday <a@x.org>\n"
                     "References: <r1@x.org>\n <r2@x.org> <r1@x.org>\nReferences: <r3@x.org>\n")
    headers = parse_headers(raw)
    assert headers.in_reply_to == ["<a@x.org>"]
    assert headers.references == ["<r1@x.org>", "<r2@x.org>", "<r3@x.org>"]


# --- Subject: encoded words, charsets, folding -------------------------------------------------

@pytest.mark.parametrize("subject, expected", [
    ("=?iso-8859-1?Q?Gr=FC=DFe_aus_Berlin?=", "Grüße aus Berlin"),
    ("=?UTF-8?B?w6TDtsO8?=", "äöü"),
    ("Re: =?utf-8?q?caf=C3=A9?= =?utf-8?q?_au_lait?=", "Re: café au lait"),   # adjacent words
    ("=?utf-8?B?5L2/?= =?utf-8?B?44Gj44Gm?=", "使って"),
    ("=?utf-8?B?5L2/4w==?=\n =?utf-8?B?gaPjgaY=?=", "使って"),              # char split across words
    ("Ticket   \t status\n\tupdate ", "Ticket status update"),                  # folded whitespace
    ("=?unicode-1-1-utf-7?Q?+ANw-bermittlungsstatus  \t(Fehlgeschlagen)?=",
     "Übermittlungsstatus (Fehlgeschlagen)"),                                   # spaces inside word
    ("=?iso-2022-jp?B?GyRCJWElayVeJSwycj18GyhC?=", "メルマガ解除"),
    ("=?windows-1258?Q?R=E9clamation_n=B0_1?=", "Réclamation n° 1"),
    ("=?ks_c_5601-1987?B?x9Gx24xj?=", "한글똠"),                                # cp949-only char
    ("=?x-mac-cyrillic?Q?=8F=F0=E8=E2=E5=F2?=", "Привет"),
    ("=?iso-gb2312?B?1tDOxA==?=", "中文"),
    ("=?utf8?Q?OK_=E2=9C=93?=", "OK ✓"),
    ("=?utf-8?B?w6Q?=", "ä"),                                                   # missing padding
    ("=?x-unknown?Q?caf=E9?=", "café"),                                         # unknown charset
    ("=?utf-8*de?Q?Stra=C3=9Fe?=", "Straße"),                                   # RFC 2231 language
    ("=?x\x00y?Q?caf=E9?=", "café"),                                            # NUL in the charset
])
def test_subject_decoding(subject: str, expected: str) -> None:
    raw = msg("From: a@example.com\nSubject: " + subject + "\n")
    assert parse_headers(raw).subject == expected


def test_subject_missing_is_empty() -> None:
    assert parse_headers(msg("From: a@example.com\n")).subject == ""


def test_subject_raw_utf8_bytes() -> None:
    raw = msg(b"From: a@example.com\nSubject: " + "Grüße 使って".encode() + b"\n")
    assert parse_headers(raw).subject == "Grüße 使って"


def test_subject_raw_8bit_legacy_uses_declared_charsets() -> None:
    # GB2312 bytes in the header; the body declares gb2312 (after a Latin-1 part, as in
    # forwarded spam): the plausible decoding wins over Latin-1 mojibake.
    raw = (b"From: a@example.com\nSubject: " + "转发：整体提升".encode("gb2312") +
           b"\nContent-Type: multipart/mixed; boundary=b\n\n--b\n"
           b"Content-Type: text/plain; charset=iso-8859-1\n\nx\n--b\n"
           b"Content-Type: text/plain; charset=gb2312\n\ny\n--b--\n")
    assert parse_headers(raw).subject == "转发：整体提升"
    assert parse_message(raw).headers.subject == "转发：整体提升"


def test_header_slice_reads_the_same_headers_from_fewer_bytes() -> None:
    ascii_mail = msg(BASE + "Message-ID: <a@b>\n", b"x" * 100_000)
    block = header_slice(ascii_mail)
    assert block == ascii_mail[:ascii_mail.index(b"\n\n") + 2]
    assert parse_headers(block, size=len(ascii_mail)) == parse_headers(ascii_mail)
    # 8-bit header bytes are decoded with charsets declared further down: those travel along
    eight_bit = (b"From: a@example.com\nSubject: " + "整体提升".encode("gb2312") +
                 b"\nContent-Type: multipart/mixed; boundary=b\n\n--b\n"
                 b"Content-Type: text/plain; charset=gb2312\n\ny\n--b--\n" + b"z" * 100_000)
    block = header_slice(eight_bit)
    assert len(block) == 65536
    assert parse_headers(block, size=len(eight_bit)) == parse_headers(eight_bit)
    assert parse_headers(block, size=len(eight_bit)).subject == "整体提升"
    assert header_slice(b"no blank line at all") == b"no blank line at all"


def test_subject_raw_8bit_without_hint_is_windows_1252() -> None:
    raw = msg(b"From: a@example.com\nSubject: Gr\xfc\xdfe \x80 5\n")
    assert parse_headers(raw).subject == "Grüße € 5"


# --- Addresses -----------------------------------------------------------------------------------

def test_addresses_lowercased_and_names_decoded() -> None:
    raw = msg('From: "=?iso-8859-1?Q?M=FCller=2C_J=F6rg?=" <Joerg.Mueller@Example.COM>\n'
              "To: =?iso-8859-1?Q?B=FCrling,=20Andreas?= <smith@example.com>, bob@EXAMPLE.com\n"
              "To: 'Carol' <carol@example.com>\n"
              "Cc: undisclosed-recipients:;\n"
              "Reply-To: Help Desk <help@example.com>\n")
    headers = parse_headers(raw)
    assert headers.from_ == Address("joerg.mueller@example.com", "Müller, Jörg")
    assert headers.to == [Address("smith@example.com", "Bürling, Andreas"),
                          Address("bob@example.com", ""), Address("carol@example.com", "Carol")]
    assert headers.cc == []
    assert headers.reply_to == [Address("help@example.com", "Help Desk")]


def test_from_prefers_real_address_over_garbage() -> None:
    raw = msg("From: [??????]\nFrom: =?utf-8?B?6YO955C5?= <x@example.cn>\n")
    assert parse_headers(raw).from_ == Address("x@example.cn", "都琹")


def test_from_missing_falls_back_to_sender_then_reply_to() -> None:
    assert parse_headers(msg("Sender: s@example.com\nReply-To: r@example.com\n")).from_ \
        == Address("s@example.com", "")
    assert parse_headers(msg('From: "Me" <>\nReply-To: <r@example.com>\n')).from_ \
        == Address("r@example.com", "")
    assert parse_headers(msg("Subject: x\n")).from_ is None


def test_from_without_domain_kept() -> None:
    raw = msg("From: MAILER-DAEMON (Mail Delivery System)\n")
    assert parse_headers(raw).from_ == Address("mailer-daemon", "Mail Delivery System")


# --- Date ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("value, expected", [
    ("Mon, 3 Sep 2018 14:11:04 +0200", datetime(2018, 9, 3, 12, 11, 4, tzinfo=timezone.utc)),
    ("Thu, 23 Jan 2020 15:39:33 +0100 (CET)", datetime(2020, 1, 23, 14, 39, 33, tzinfo=timezone.utc)),
    ("24 Sep 2018 10:22:54 -0700", datetime(2018, 9, 24, 17, 22, 54, tzinfo=timezone.utc)),
    ("Fri, 4 May 2012 14:01:03 -0000", datetime(2012, 5, 4, 14, 1, 3, tzinfo=timezone.utc)),
    ("Tue, 1 Jul 03 10:00:00 GMT", datetime(2003, 7, 1, 10, 0, 0, tzinfo=timezone.utc)),
    ("not a date", None),
    ("Mon, 31 Feb 2018 10:00:00 +0000", None),
])
def test_date_aware_utc(value: str, expected: datetime | None) -> None:
    got = parse_headers(msg(BASE + f"Date: {value}\n")).date
    assert got == expected
    if got is not None:
        assert got.tzinfo is not None and got.utcoffset().total_seconds() == 0


def test_date_missing() -> None:
    assert parse_headers(msg(BASE)).date is None


# --- Loop protection --------------------------------------------------------------------------

@pytest.mark.parametrize("header", [
    "Auto-Submitted: auto-replied",
    "Auto-Submitted: auto-generated; owner-email=x@example.com",
    "X-Auto-Response-Suppress: All",
    "X-Auto-Response-Suppress: DR, OOF, AutoReply",
    "Precedence: bulk",
    "Precedence: junk",
    "Precedence: list",
    "Precedence: auto_reply",
    "X-Precedence: bulk",
    "List-Id: Support list <support.lists.example.com>",
    "X-Autoreply: yes",
    "X-Autorespond: Out of office",
    "X-Autoresponder: true",
    "X-AutoGenerated: Reply",
    "X-Loop: helpdesk@example.com",
    "X-Cron-Env: <SHELL=/bin/sh>",
    "Content-Type: multipart/report; report-type=disposition-notification; boundary=x",
])
def test_automatic_headers(header: str) -> None:
    headers = parse_headers(msg(BASE + header + "\n"))
    assert headers.auto_submitted is True
    assert headers.is_bounce is False


@pytest.mark.parametrize("header", [
    "", "Auto-Submitted: no", "Auto-Submitted: No", "Precedence: first-class", "X-Autoreply: no",
    "X-Auto-Response-Suppress: None",
])
def test_human_mail_is_not_automatic(header: str) -> None:
    headers = parse_headers(msg(BASE + header + "\n"))
    assert (headers.auto_submitted, headers.is_bounce) == (False, False)


@pytest.mark.parametrize("headers_text", [
    "From: a@example.com\nContent-Type: multipart/report; report-type=delivery-status; boundary=x",
    "From: a@example.com\nContent-Type: multipart/report; report-type=\"Delivery-Status\"; "
    "boundary=x",
    "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>",
    "From: postmaster@example.com",
    "From: MAILER-DAEMON",
    "Return-Path: <>\nFrom: a@example.com",
    "Return-Path: < >\nFrom: a@example.com",
    "From: a@example.com\nX-Failed-Recipients: b@example.com",
])
def test_bounces(headers_text: str) -> None:
    headers = parse_headers(msg(headers_text + "\nSubject: Undelivered\n"))
    assert headers.is_bounce is True
    assert headers.auto_submitted is True  # a bounce must never trigger an auto-reply either


def test_x_loop_value_and_size() -> None:
    raw = msg(BASE + "X-Loop: helpdesk@example.com\n")
    headers = parse_headers(raw)
    assert headers.x_loop == "helpdesk@example.com"
    assert headers.size == len(raw)
    assert parse_headers(msg(BASE)).x_loop is None


# --- Header block oddities ---------------------------------------------------------------------

def test_mbox_from_line_and_unindented_continuations() -> None:
    raw = (b"From alice@example.com Wed Apr 19 20:56:33 2017\n"
           b"X-Tracker: AAAA\nBBBBCCCC\nFrom: Alice <alice@example.com>\nSubject: Real\n\nbody\n")
    headers = parse_headers(raw)
    assert (headers.subject, headers.from_) == ("Real", Address("alice@example.com", "Alice"))


def test_garbage_before_headers_ignored() -> None:
    raw = b"---- Original email message ----\nSubject: Contact\nFrom: x@example.cz\n\nHi\n"
    parsed = parse_message(raw)
    assert (parsed.headers.subject, parsed.body_text) == ("Contact", "Hi")


def test_missing_blank_line_between_headers_and_body() -> None:
    parsed = parse_message(b"Subject: x\nFrom: a@example.com\nHello there\nsecond line\n")
    assert parsed.headers.subject == "x"
    assert parsed.body_text == "Hello there\nsecond line"
    # A line without a field name continues a field only if more fields follow it.
    parsed = parse_message(b"Subject: x\nFrom: a@example.com\nHello there\n\nBye\n")
    assert parsed.headers.subject == "x"
    assert parsed.body_text == "Hello there\n\nBye"


def test_space_before_colon_in_field_name() -> None:
    raw = msg("From: a@example.com\nSubject : Spaced\nTo: b@example.com\n")
    assert parse_message(raw).headers == parse_headers(raw)
    assert (parse_headers(raw).subject, parse_headers(raw).to) == (
        "Spaced", [Address("b@example.com", "")])


@pytest.mark.parametrize("raw", [
    b"", b"\n", b"\r\n\r\n", b"\x00\xff\xfe", b":", b"Subject", b"Subject:", b"From: <<<>>>\n",
    b"Content-Type: multipart/mixed; boundary=\n\n--\n--\n", b"Date: 99 Foo 99999 99:99:99\n",
    b"Subject: =?utf-8?B?====?= =?bogus?X?x?= =?utf-8?Q?=ZZ?=\n",
    b"Subject: =?utf-8?B?abcde?= \\u12 =?utf-8?Q?x?= \xe4\n",
    # the stdlib's get_param raises TypeError on "x*" mixed with "x*0"
    b"Content-Type: multipart/mixed; boundary=m; x*=a; x*0=b\n\n--m\n\nbody\n--m--\n",
])
def test_garbage_never_raises(raw: bytes) -> None:
    headers = parse_headers(raw)
    parsed = parse_message(raw)
    assert parsed.headers == headers
    assert headers.size == len(raw)


def test_fuzzed_messages_never_raise() -> None:
    rng = random.Random(1234)
    seed = SAMPLE_MULTIPART
    for _ in range(300):
        data = bytearray(seed)
        for _ in range(rng.randint(1, 30)):
            pos = rng.randrange(len(data))
            op = rng.random()
            if op < 0.4:
                data[pos] = rng.randrange(256)
            elif op < 0.7:
                del data[pos:pos + rng.randint(1, 40)]
            else:
                data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 10)))
        parsed = parse_message(bytes(data))
        assert isinstance(parsed.body_text, str)
        assert parse_headers(bytes(data)) == parsed.headers


# --- Bodies: charsets --------------------------------------------------------------------------

def _text(charset: str, payload: bytes, cte: str = "8bit") -> bytes:
    return msg(BASE + f"Content-Type: text/plain; charset={charset}\n"
                      f"Content-Transfer-Encoding: {cte}\n", payload)


@pytest.mark.parametrize("charset, payload, expected", [
    ("iso-gb2312", "中文邮件".encode("gb2312"), "中文邮件"),
    ("gb2312", "镕".encode("gbk"), "镕"),                          # GBK-only char under gb2312
    ("utf8", "Grüße".encode(), "Grüße"),
    ('"UTF-8"', "Grüße".encode(), "Grüße"),
    ("unicode-1-1-utf-7", b"+ANw-bermittlung", "Übermittlung"),
    ("x-mac-roman", "Café".encode("mac_roman"), "Café"),
    ("x-mac-cyrillic", "Привет".encode("mac_cyrillic"), "Привет"),
    ("ks_c_5601-1987", "한글똠".encode("cp949"), "한글똠"),
    ("windows-1258", "Réclamation commande n° 1".encode("cp1258"), "Réclamation commande n° 1"),
    ("ISO-2022-JP", "メルマガ解除".encode("iso2022_jp"), "メルマガ解除"),
    ("iso-2022-jp", b"\x1b$B-!#1ET\x1b(B", "①１都"),                # NEC extension (cp50220)
    ("iso-8859-1", b"\x93quoted\x94 \x80", "\u201cquoted\u201d €"),  # really windows-1252
    ("iso-8859-1", "mislabelled ä".encode(), "mislabelled ä"),     # really UTF-8
    ("shift_jis", "①ツール".encode("cp932"), "①ツール"),
    ("big5", "中文".encode("big5"), "中文"),
    ("tis-620", "ไทย".encode("cp874"), "ไทย"),
    ("cp-1251", "Сергей".encode("cp1251"), "Сергей"),
])
def test_body_charsets(charset: str, payload: bytes, expected: str) -> None:
    parsed = parse_message(_text(charset, payload))
    assert parsed.body_text == expected
    assert parsed.notes == []


def test_unknown_charset_is_noted() -> None:
    parsed = parse_message(_text("x-unknown", b"caf\xe9"))
    assert parsed.body_text == "café"
    assert parsed.notes == ["charset 'x-unknown' unknown, decoded as windows-1252"]


def test_us_ascii_with_8bit_bytes() -> None:
    parsed = parse_message(_text("us-ascii", b"caf\xe9"))
    assert parsed.body_text == "café"
    assert parsed.notes == ["8-bit data declared 'us-ascii', decoded as windows-1252"]


def test_no_charset_utf8_bytes() -> None:
    parsed = parse_message(msg(BASE, "naïve ✓".encode()))
    assert (parsed.body_text, parsed.notes) == ("naïve ✓", [])


def test_invalid_bytes_in_declared_charset_fall_back_leniently() -> None:
    parsed = parse_message(_text("iso-gb2312", "Here ä - ".encode() + "差出人".encode() + b" \xe4"))
    assert parsed.body_text == "Here ä - 差出人 ä"
    assert parsed.notes == ["data declared 'iso-gb2312' has invalid bytes, decoded as UTF-8 "
                            "with windows-1252 for the bytes that are not"]
    parsed = parse_message(_text("gb2312", "中文测试".encode("gb2312") + b"\xff"))
    assert parsed.body_text == "中文测试\ufffd"
    assert parsed.notes == ["data declared 'gb2312' has invalid bytes, replaced with U+FFFD"]


def test_html_meta_charset_used_when_header_has_none() -> None:
    html = '<html><head><meta charset="windows-1251"></head><body>Привет</body></html>'
    parsed = parse_message(msg(BASE + "Content-Type: text/html\n", html.encode("cp1251")))
    assert parsed.body_html == html
    assert parsed.body_text == "Привет"


# --- Bodies: transfer encodings and broken MIME ------------------------------------------------

def test_base64_missing_padding_and_line_noise() -> None:
    parsed = parse_message(_text("utf-8", b"R3L8w59l\n*\nIEFsbGU", cte="base64"))
    assert parsed.body_text == "Grüße Alle"


def test_base64_with_appended_footer_keeps_both() -> None:
    body = base64.b64encode("Grüße".encode()) + b"\n-- \nList footer: http://list.example.com\n"
    parsed = parse_message(_text("utf-8", body, cte="base64"))
    assert parsed.body_text == "Grüße\n-- \nList footer: http://list.example.com"
    assert parsed.notes == ["part declared base64 has trailing non-base64 data, kept undecoded"]


def test_declared_base64_that_is_plain_text() -> None:
    parsed = parse_message(_text("utf-8", b"Hello, this is not base64!\n", cte="base64"))
    assert parsed.body_text == "Hello, this is not base64!"
    assert parsed.notes == ["part declared base64 is not base64, content taken as is"]


def test_quoted_printable_lenient() -> None:
    body = b"Gr=FC=DFe=\nAlle =3D ok =ZZ bad= \nend\n"
    parsed = parse_message(_text("iso-8859-1", body, cte="quoted-printable"))
    assert parsed.body_text == "GrüßeAlle = ok =ZZ badend"


@pytest.mark.parametrize("cte", ["Quoted-Printable ", "QUOTED_PRINTABLE", "quoted printable"])
def test_transfer_encoding_spelling_variants(cte: str) -> None:
    assert parse_message(_text("utf-8", b"caf=C3=A9", cte=cte)).body_text == "café"


def test_unknown_transfer_encoding_taken_as_is() -> None:
    parsed = parse_message(_text("utf-8", "Grüße".encode(), cte="UTF-8"))
    assert parsed.body_text == "Grüße"
    assert parsed.notes == ["unknown Content-Transfer-Encoding 'UTF-8', content taken as is"]


def test_missing_close_boundary() -> None:
    raw = msg(BASE + "Content-Type: multipart/mixed; boundary=XYZ\n",
              b"--XYZ\nContent-Type: text/plain\n\nbody text\n--XYZ\n"
              b"Content-Type: application/pdf; name=a.pdf\nContent-Transfer-Encoding: base64\n\n"
              b"JVBERi0x\n")
    parsed = parse_message(raw)
    assert parsed.body_text == "body text"
    assert parsed.attachments == [Part("a.pdf", "application/pdf", b"%PDF-1", None, False)]


def test_boundary_never_in_body() -> None:
    raw = msg(BASE + "Content-Type: multipart/mixed; boundary=\"nope\"\n"
                     "Content-Transfer-Encoding: quoted-printable\n", b"=E4=F6 text\n")
    parsed = parse_message(raw)
    assert parsed.body_text == "äö text"
    assert parsed.notes == ["multipart/mixed without its boundary in the body: content taken as "
                            "text"]


def test_multipart_without_boundary_parameter() -> None:
    parsed = parse_message(msg(BASE + "Content-Type: multipart/alternative\n", b"just text\n"))
    assert parsed.body_text == "just text"


def test_boundary_prefix_of_inner_boundary() -> None:
    raw = msg(BASE + 'Content-Type: multipart/mixed; boundary="b"\n',
              b"--b\nContent-Type: multipart/alternative; boundary=\"b-inner\"\n\n"
              b"--b-inner\nContent-Type: text/plain\n\nplain\n"
              b"--b-inner\nContent-Type: text/html\n\n<p>html</p>\n--b-inner--\n"
              b"--b\nContent-Type: text/csv; name=x.csv\n\na,b\n--b--\n")
    parsed = parse_message(raw)
    assert (parsed.body_text, parsed.body_html) == ("plain", "<p>html</p>")
    assert parsed.attachments == [Part("x.csv", "text/csv", b"a,b", None, False)]


def test_crlf_message() -> None:
    raw = msg(BASE + "Content-Type: multipart/mixed; boundary=b\n",
              "--b\nContent-Type: text/plain; charset=utf-8\n\nline1\nline2\n"
              "--b\nContent-Type: message/rfc822\n\nSubject: Inner\n\ninner body\n--b--\n",
              crlf=True)
    parsed = parse_message(raw)
    # the forwarded mail's text joins the body text (search, API) after a header block
    assert parsed.body_text == ("line1\nline2\n---------- Forwarded message ----------\nSubject: Inner\n\n"
                                "inner body")
    assert parsed.attachments == [
        Part("Inner.eml", "message/rfc822", b"Subject: Inner\r\n\r\ninner body", None, False)]


# --- Body selection ----------------------------------------------------------------------------

SAMPLE_MULTIPART = msg(
    BASE + "Message-ID: <sample@example.com>\n"
           'Content-Type: multipart/mixed; boundary="outer"\n',
    b"--outer\nContent-Type: multipart/alternative; boundary=\"alt\"\n\n"
    b"--alt\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\n"
    b"Gr=C3=BC=C3=9Fe, see image\n"
    b"--alt\nContent-Type: multipart/related; boundary=\"rel\"\n\n"
    b"--rel\nContent-Type: text/html; charset=utf-8\n\n"
    b"<p>Gr\xc3\xbc\xc3\x9fe, <img src=\"cid:img1@x\"></p>\n"
    b"--rel\nContent-Type: image/png\nContent-ID: <img1@x>\nContent-Transfer-Encoding: base64\n\n"
    b"iVBORw0KGgo=\n--rel--\n--alt--\n"
    b"--outer\nContent-Type: application/pdf\nContent-Disposition: attachment\n"
    b"Content-Transfer-Encoding: base64\n\nJVBERi0xLjQ=\n--outer--\n",
)


def test_alternative_related_mixed() -> None:
    parsed = parse_message(SAMPLE_MULTIPART)
    assert parsed.body_text == "Grüße, see image"
    assert parsed.body_html == '<p>Grüße, <img src="cid:img1@x"></p>'
    assert parsed.attachments == [
        Part("inline-image.png", "image/png", b"\x89PNG\r\n\x1a\n", "img1@x", True),
        Part("attachment.pdf", "application/pdf", b"%PDF-1.4", None, False),
    ]
    assert parsed.notes == []


def test_html_only_body_text_derived() -> None:
    html = ("<html><head><style>p{color:red}</style><title>T</title></head><body>"
            "<p>First&nbsp;para &amp; more</p><div>Line<br>break</div>"
            "<ul><li>one</li><li>two</li></ul><script>x()</script>"
            "<table><tr><td>a</td><td>b</td></tr></table></body></html>")
    parsed = parse_message(msg(BASE + "Content-Type: text/html; charset=utf-8\n", html))
    assert parsed.body_html == html
    assert parsed.body_text == "First para & more\nLine\nbreak\n- one\n- two\na b"


def test_html_only_outlook_paragraphs() -> None:
    html = ('<p class=MsoNormal>Hallo,</p>\r\n<p class=MsoNormal>&nbsp;</p>\r\n'
            '<p class=MsoNormal>zweite<br></p><div>a<br><br></div><div>b&#0;</div>'
            '<p>unclosed <b x="1 < 2">tag</p><!-- hidden --><style>')
    parsed = parse_message(msg(BASE + "Content-Type: text/html; charset=utf-8\n", html))
    assert parsed.body_text == 'Hallo,\n\nzweite\na\n\nb\ufffd\nunclosed <b x="1 < 2">tag'


def test_empty_plain_alternative_uses_html() -> None:
    raw = msg(BASE + "Content-Type: multipart/alternative; boundary=a\n",
              b"--a\nContent-Type: text/plain\n\n\n--a\nContent-Type: text/html\n\n<b>bold</b>\n"
              b"--a--\n")
    parsed = parse_message(raw)
    assert (parsed.body_text, parsed.body_html) == ("bold", "<b>bold</b>")


def test_mixed_text_image_text_keeps_all_text() -> None:
    raw = msg(BASE + "Content-Type: multipart/mixed; boundary=m\n",
              b"--m\nContent-Type: text/plain\n\nbefore\n"
              b"--m\nContent-Type: image/gif\nContent-Disposition: inline; filename=a.gif\n\nGIF\n"
              b"--m\nContent-Type: text/plain\n\nafter\n--m--\n")
    parsed = parse_message(raw)
    assert parsed.body_text == "before\nafter"
    assert parsed.attachments == [Part("a.gif", "image/gif", b"GIF", None, True)]


def test_text_attachment_is_not_body() -> None:
    raw = msg(BASE + "Content-Type: multipart/mixed; boundary=m\n",
              b"--m\nContent-Type: text/plain\n\nbody\n"
              b"--m\nContent-Type: text/plain; name=notes.txt\n\nattached\n"
              b"--m\nContent-Type: text/html\nContent-Disposition: attachment\n\n<p>x</p>\n--m--\n")
    parsed = parse_message(raw)
    assert parsed.body_text == "body"
    assert [(a.filename, a.data) for a in parsed.attachments] == [
        ("notes.txt", b"attached"), ("attachment.html", b"<p>x</p>")]


def test_format_flowed() -> None:
    raw = msg(BASE + "Content-Type: text/plain; charset=utf-8; format=flowed\n",
              b"This is a long \nparagraph.\n> quoted soft \n> line\n-- \nsig\n")
    assert parse_message(raw).body_text == "This is a long paragraph.\n> quoted soft line\n-- \nsig"


# --- Attachments ---------------------------------------------------------------------------------

def _attachment(headers: str, payload: bytes = b"QUJD", cte: str = "base64") -> Part:
    raw = msg(BASE + "Content-Type: multipart/mixed; boundary=m\n",
              b"--m\nContent-Type: text/plain\n\nbody\n--m\n" + headers.encode("latin-1")
              + f"\nContent-Transfer-Encoding: {cte}\n\n".encode() + payload + b"\n--m--\n")
    parsed = parse_message(raw)
    # an attached mail's text follows (shown as a forwarded mail), the attachment is the same
    assert parsed.body_text == "body" or parsed.body_text.startswith("body\n" + FORWARD_MARK)
    assert len(parsed.attachments) == 1
    return parsed.attachments[0]


@pytest.mark.parametrize("headers, filename", [
    ("Content-Type: application/pdf; name=\"a.pdf\"", "a.pdf"),
    ("Content-Type: application/octet-stream\nContent-Disposition: attachment; filename=b.bin; "
     "name=ignored", "b.bin"),
    ("Content-Type: text/plain\nContent-Disposition: attachment; "
     "filename*=utf-8''Erkl%C3%A4rung.txt", "Erklärung.txt"),
    ("Content-Type: image/jpeg\nContent-Disposition: attachment;\n filename*0*=utf-8''Gr%C3%BC;"
     "\n filename*1*=%C3%9Fe%20;\n filename*2=\"aus.jpg\"", "Grüße aus.jpg"),
    ("Content-Type: image/jpeg\nContent-Disposition: attachment;\n  "
     "filename*=\"ISO-8859-1''Bestellbest%E4tigung.jpg\"", "Bestellbestätigung.jpg"),
    ("Content-Type: application/vnd.ms-excel; name=\"=?GB2312?B?vqvS5ri9vP4=?=.xls\"",
     "精益附件.xls"),
    ("Content-Type: image/jpg; name=\"=?utf-8?B?Q1BHLVJla2xhbWF0aW9uc21pdHRlaWx1bmcgYmV6w7xnbC4=?="
     "\n =?utf-8?Q?jpg?=\"", "CPG-Reklamationsmitteilung bezügl.jpg"),
    ("Content-Type: image/jpg; name=\" =?ISO-8859-1?B?QmVzdGVsbGJlc3TkdGlndW5n?=.jpg\"",
     "Bestellbestätigung.jpg"),
    ("Content-Type: application/pdf; name=\"C:\\\\Users\\\\me\\\\report.pdf\"", "report.pdf"),
    ("Content-Type: application/pdf", "attachment.pdf"),
    ("Content-Type: image/png\nContent-Disposition: inline", "inline-image.png"),
    ("Content-Type: image/png\nContent-ID: <x@y>", "inline-image.png"),
    ("Content-Type: image/jpeg\nContent-Disposition: inline; filename=\"=?utf-8?b??=\"",
     "inline-image.jpg"),
    ("Content-Type: application/x-weird-thing", "attachment.bin"),
    ("Content-Type: message/delivery-status", "delivery-status.txt"),
    ("Content-Type: text/calendar; method=REQUEST", "invite.ics"),
])
def test_attachment_filenames(headers: str, filename: str) -> None:
    assert _attachment(headers).filename == filename


def test_raw_8bit_gb2312_filename_uses_declared_charset() -> None:
    raw = (b"From: a@example.com\nContent-Type: multipart/mixed; charset=\"GB2312\"; boundary=m\n\n"
           b"--m\nContent-Type: text/plain\n\nbody\n--m\nContent-Type: application/octet-stream\n"
           b"Content-Disposition: attachment; filename=\"" + "绩效管理.xls".encode("gb2312") +
           b"\"\nContent-Transfer-Encoding: base64\n\nQUJD\n--m--\n")
    assert parse_message(raw).attachments == [
        Part("绩效管理.xls", "application/octet-stream", b"ABC", None, False)]


def test_tnef_kept_as_attachment() -> None:
    part = _attachment("Content-Type: application/ms-tnef", base64.b64encode(b"\x78\x9f\x3e\x22"))
    assert part == Part("winmail.dat", "application/ms-tnef", b"\x78\x9f\x3e\x22", None, False)
    part = _attachment("Content-Type: application/ms-tnef; name=\"winmail.dat\"\n"
                       "Content-Disposition: attachment", base64.b64encode(b"TNEF"))
    assert (part.filename, part.data) == ("winmail.dat", b"TNEF")


def test_uuencoded_part() -> None:
    uu = b"begin 644 hello.txt\n,2&5L;&\\@6F%M;6%D\n`\nend\n"
    part = _attachment("Content-Type: application/octet-stream", uu, cte="x-uuencode")
    assert part == Part("hello.txt", "application/octet-stream", b"Hello Zammad", None, False)


def test_uuencoded_block_in_text_body() -> None:
    body = b"See attached.\n\nbegin 644 hello.txt\n,2&5L;&\\@6F%M;6%D\n`\nend\n\nBye\n"
    parsed = parse_message(msg(BASE, body))
    assert parsed.body_text == "See attached.\n\n\nBye"
    assert parsed.attachments == [Part("hello.txt", "text/plain", b"Hello Zammad", None, False)]


def test_attached_message_is_eml_with_original_bytes() -> None:
    inner = b"From: b@example.com\nSubject: =?utf-8?Q?Ang=C3=A9bot?= / Q3\n\nInner text\n"
    raw = msg(BASE + "Content-Type: multipart/mixed; boundary=m\n",
              b"--m\nContent-Type: text/plain\n\nFYI\n--m\nContent-Type: message/rfc822\n\n"
              + inner + b"--m--\n")
    parsed = parse_message(raw)
    assert parsed.attachments == [
        Part("Angébot - Q3.eml", "message/rfc822", inner.rstrip(b"\n"), None, False)]


def test_attached_message_written_back_as_sent() -> None:
    inner = (b"From: b@example.com\nIn-Reply-To: \nX-Empty:\nSubject:\tTabbed\n"
             b"X-Folded: a,\n\tb\nX-Raw: Gr\xfc\xdfe\n\nInner \xe4")
    raw = msg(BASE + "Content-Type: multipart/mixed; boundary=m\n",
              b"--m\nContent-Type: text/plain\n\nFYI\n--m\nContent-Type: message/rfc822\n\n"
              + inner + b"\n--m--\n", crlf=True)
    assert parse_message(raw).attachments == [
        Part("Tabbed.eml", "message/rfc822", inner.replace(b"\n", b"\r\n"), None, False)]


def test_base64_encoded_attached_message() -> None:
    inner = b"From: b@example.com\nSubject: Encoded\n\nInner text"
    part = _attachment("Content-Type: message/rfc822", base64.encodebytes(inner))
    assert (part.filename, part.data) == ("Encoded.eml", inner)
    # shown (and searchable) as the mail it encodes, not as its base64
    parsed = parse_message(msg(BASE + "Content-Type: multipart/mixed; boundary=m\n",
                               b"--m\nContent-Type: message/rfc822\nContent-Transfer-Encoding: base64\n\n"
                               + base64.encodebytes(inner) + b"--m--\n"))
    assert parsed.body_text == (f"{FORWARD_MARK}\nFrom: b@example.com\nSubject: Encoded\n\nInner text")


def test_attached_message_without_subject() -> None:
    part = _attachment("Content-Type: message/rfc822", b"From: x@example.com\n\nhi", cte="7bit")
    assert part.filename == "forwarded-message.eml"


def test_part_with_broken_content_type_kept_as_attachment() -> None:
    part = _attachment("Content-Type: ;;garbage;;; name=\"x.dat\"", b"QUJD")
    assert part == Part("x.dat", "application/octet-stream", b"ABC", None, False)
    raw = msg(BASE + "Content-Type: multipart/mixed; boundary=m\n",
              b"--m\nContent-Type: text/plain\n\nbody\n--m\nContent-Type: @@@\n\nbin\x00ary\n--m--\n")
    parsed = parse_message(raw)
    assert parsed.body_text == "body"
    assert parsed.attachments == [
        Part("attachment.bin", "application/octet-stream", b"bin\x00ary", None, False)]
    assert parsed.notes == ["part with unparseable Content-Type '@@@' kept as attachment "
                            "'attachment.bin'"]


def test_part_with_broken_content_type_that_is_text() -> None:
    raw = msg(BASE + "Content-Type: multipart/mixed; boundary=m\n",
              b"--m\nContent-Type: text/plain\n\nbody\n--m\n"
              b"Content-Type: charset=\"utf-8\"\n\nmore text \xc3\xa4\n--m--\n")
    parsed = parse_message(raw)
    assert parsed.body_text == "body\nmore text ä"
    assert parsed.attachments == []
    assert parsed.notes == ["unparseable Content-Type 'charset=\"utf-8\"' read as text/plain"]


def test_base64_one_character_too_many() -> None:
    part = _attachment("Content-Type: application/octet-stream", b"/9j/4AAQSkZJABC123456")
    assert part.data == base64.b64decode(b"/9j/4AAQSkZJABC12345")


def test_mixed_rfc2231_continuations_in_a_part() -> None:
    part = _attachment("Content-Type: application/pdf; name*=a.pdf; name*0=b.pdf")
    assert (part.filename, part.data) == ("attachment.pdf", b"ABC")


def test_image_without_transfer_encoding_but_base64_content() -> None:
    payload = base64.encodebytes(bytes(range(256)))
    part = _attachment("Content-Type: image/png; name=p.png", payload, cte="7bit")
    assert part.data == bytes(range(256))


def test_empty_attachment_kept() -> None:
    part = _attachment("Content-Type: message/rfc822", b"", cte="7bit")
    assert (part.filename, part.data) == ("forwarded-message.eml", b"")


def test_signed_and_encrypted_parts_are_attachments() -> None:
    raw = msg(BASE + 'Content-Type: multipart/signed; protocol="application/pgp-signature"; '
                     "boundary=s\n",
              b"--s\nContent-Type: text/plain\n\nsigned text\n--s\n"
              b"Content-Type: application/pgp-signature\n\n-----BEGIN PGP SIGNATURE-----\n--s--\n")
    parsed = parse_message(raw)
    assert parsed.body_text == "signed text"
    assert parsed.attachments == [Part("signature.asc", "application/pgp-signature",
                                       b"-----BEGIN PGP SIGNATURE-----", None, False)]


def test_delivery_status_report() -> None:
    raw = msg("From: MAILER-DAEMON@mx.example.com\nSubject: Undelivered\n"
              "Content-Type: multipart/report; report-type=delivery-status; boundary=r\n",
              b"--r\nContent-Type: text/plain\n\nCould not deliver.\n"
              b"--r\nContent-Type: message/delivery-status\n\nReporting-MTA: dns; mx\n\n"
              b"Final-Recipient: rfc822; x@example.com\nStatus: 5.1.1\n"
              b"--r\nContent-Type: text/rfc822-headers\n\nSubject: Original\n--r--\n")
    parsed = parse_message(raw)
    assert parsed.headers.is_bounce and parsed.headers.auto_submitted
    assert parsed.body_text == "Could not deliver."
    assert [(a.filename, a.content_type) for a in parsed.attachments] == [
        ("delivery-status.txt", "message/delivery-status"),
        ("message-headers.txt", "text/rfc822-headers")]
    # The stdlib parses a delivery status into header blocks and its generator writes them back
    # with every field line ending in a line break, also the last one (the line break before the
    # boundary belongs to the boundary, so the part as sent ends in "5.1.1").
    assert parsed.attachments[0].data == (b"Reporting-MTA: dns; mx\n\n"
                                          b"Final-Recipient: rfc822; x@example.com\nStatus: 5.1.1\n")


# --- Size limit, single pass -----------------------------------------------------------------------

def test_over_max_size_returns_headers_and_note_only() -> None:
    raw = SAMPLE_MULTIPART
    parsed = parse_message(raw, max_size=100)
    assert parsed.headers == parse_headers(raw)
    assert parsed.headers.message_id == "<sample@example.com>"
    assert (parsed.body_text, parsed.body_html, parsed.attachments) == ("", None, [])
    assert parsed.notes == ["message exceeds the 100 bytes limit: body and attachments not imported"]


def test_default_limit_is_36_mb() -> None:
    raw = msg(BASE, b"x" * (36 * 1024 * 1024))
    parsed = parse_message(raw)
    assert parsed.notes == ["message exceeds the 36 MB limit: body and attachments not imported"]
    assert parsed.headers.subject == "Hi"


def test_header_block_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """One pass: the message is parsed once, so each header block is read once."""
    calls: list[int] = []
    real = email.feedparser.FeedParser._parse_headers

    def counting(self: email.feedparser.FeedParser, lines: list[str]) -> None:
        calls.append(len(lines))
        real(self, lines)

    monkeypatch.setattr(email.feedparser.FeedParser, "_parse_headers", counting)
    parse_message(SAMPLE_MULTIPART)
    assert len(calls) == 7  # message + alternative + plain + related + html + image + pdf
    calls.clear()
    parse_headers(SAMPLE_MULTIPART)
    assert len(calls) == 1


def test_accepts_bytearray_and_memoryview() -> None:
    raw = msg(BASE, b"x\n")
    assert parse_message(bytearray(raw)) == parse_message(raw)
    assert parse_headers(memoryview(raw)) == parse_headers(raw)


# --- Hostile structure: bounded work, notes instead of failures ------------------------------------

def test_deep_nesting_is_cut_off() -> None:
    inner = b"Content-Type: text/plain\n\ndeep\n"
    for i in range(100, 0, -1):
        inner = (f"Content-Type: multipart/mixed; boundary=b{i}\n\n--b{i}\n".encode() + inner
                 + f"\n--b{i}--\n".encode())
    parsed = parse_message(b"From: a@example.com\n" + inner)
    assert parsed.body_text == ""
    assert [a.content_type for a in parsed.attachments] == ["multipart/mixed"]
    assert parsed.notes == ["MIME nesting too deep: innermost parts kept as one attachment"]


def test_too_many_parts_are_dropped_with_a_note() -> None:
    body = b"".join(b"--b\nContent-Type: application/octet-stream\n\nx\n" for _ in range(6000))
    parsed = parse_message(b"Content-Type: multipart/mixed; boundary=b\n\n" + body + b"--b--\n")
    assert len(parsed.attachments) == parse_module.MAX_PARTS - 1
    assert parsed.notes == ["more MIME parts than the parser accepts: the rest was dropped"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("body", [
    b"<script>" * 30000, b"<style x>" * 30000, b"<![CDATA[" * 30000, b"<!--" * 50000,
    b"<" * 200000, b"<meta " * 30000, b"<br" * 60000,
])
def test_unclosed_html_constructs_stay_linear(body: bytes) -> None:
    parsed = parse_message(b"Content-Type: text/html\n\n" + body)
    assert parsed.body_html is not None


RFC1896_EXAMPLE = ("<bold>Now</bold> is the time for <italic>all</italic>\r\ngood men\r\n\r\n<smaller>(and "
                   "<<women>)</smaller> to\r\n<ignoreme>come</ignoreme>\r\n\r\n\r\nto the aid of their\r\n"
                   "<color><param>red</param>beloved</color> country.\r\n")


def test_enriched_text_reads_as_rfc_1896_shows_it():
    from connector.mail.enriched import enriched_to_text
    assert enriched_to_text(RFC1896_EXAMPLE) == ("Now is the time for all good men\n(and <women>) to come\n\n"
                                                 "to the aid of their beloved country. ")
    assert enriched_to_text("a<nofill>x\r\ny\r\n</nofill>b") == "ax\ny\nb"
    assert enriched_to_text("one<nl>two\nthree", "text/richtext") == "one\ntwo three"
    assert enriched_to_text("<</param> <param>unclosed <b") == "</param> "  # << is a "<"; an open param hides the rest


def test_a_text_enriched_mail_shows_its_text_as_mail_clients_do():
    raw = (b"From: a@example.org\r\nTo: desk@example.com\r\nSubject: Enriched\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/enriched\r\n\r\n"
           + RFC1896_EXAMPLE.encode() + b"--b\r\nContent-Type: text/plain\r\n\r\nPS: thanks\r\n--b--\r\n")
    parsed = parse_message(raw)
    assert parsed.body_text.startswith("Now is the time for all good men\n(and <women>) to come")
    assert "PS: thanks" in parsed.body_text and parsed.attachments == []
    assert '"t":"text"' in parsed.display and "<bold>" not in parsed.body_text
