"""The fast path of the parser: the MIME tree of a simply built mail, read without the feed parser.

`parse.py` reads every mail with the stdlib's feed parser (bounded in feed.py), which hands the body
over line by line and re-scans each line against every open boundary: about half of a mail's parse.
Most real mail is simply built, though: clean header blocks, one boundary per multipart (a multipart
whose closing boundary line is missing, which is common, is read as the feed parser reads it). For such a mail `read_simple` builds the tree the feed parser would build (the same
`BoundedMessage` objects (with a faster `get`) with the same headers, payloads, preambles and epilogues) by cutting the text
at its boundary lines with `str.find`, and the rest of `parse.py` (the walk, the decoding, the display
model) runs on it unchanged. So the fast path cannot give another body, HTML, attachment or display:
only the tree is built differently, and tests/test_fastpath.py checks on every corpus mail that the
tree and the result are the same as the stdlib's.

Forwarded mails (message/* parts) are read as mails of their own, and delivery statuses as blocks of
fields, as the feed parser reads them. A mail qualifies by its structure; anything else goes to the feed
parser, which knows every quirk: a header block with a line that is not a field (the stdlib repairs such
mails, see headers.py), an envelope ``From `` line other than the first, a lone CR as a line break,
multipart/digest, a multipart without its boundary or its opening boundary line, with two boundary lines
in a row or a boundary reused inside it, nesting deeper than `MAX_DEPTH`, more parts than `MAX_PARTS`. Every
step is a `str.find` or one regular expression match per boundary line, so the fast path is linear
in the size of the mail (hostile mail that would make it do more is refused and goes to the bounded
feed parser).
"""
from __future__ import annotations

import re
from email import errors
from email.message import Message

from .feed import BoundedMessage
from .headers import POLICY
from .parse import DEFAULT_MAX_SIZE, ParsedMail, _as_bytes, parse_message, parse_tree

__all__ = ["parse_mail", "read_simple", "MAX_DEPTH", "MAX_PARTS"]

MAX_DEPTH = 8    # multiparts inside multiparts read here; deeper mails go to the feed parser
MAX_PARTS = 200  # parts of one mail read here; mails with more go to the feed parser
# A field as feedparser's headerRE and _parse_headers read it: a name (no colon, space or control character), a
# colon, the rest of the line and its continuation lines (starting with a space or a tab), each with its line break.
_FIELD = r"([\041-\071\073-\176]+):([^\n]*\n(?:[ \t][^\n]*\n)*)"
_FIELD_RE = re.compile(_FIELD)
_LONE_CR_RE = re.compile(rb"\r(?!\n)")
_FIELDS_RE = re.compile(f"(?:{_FIELD})*")
_BOUNDARY_TAIL_RE = re.compile(r"(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$")  # feedparser's, past "--" boundary


def _without_eol(text: str) -> str:
    """`text` without one line break at its end (what feedparser's NLCRE_eol takes off)."""
    if text.endswith("\r\n"):
        return text[:-2]
    return text[:-1] if text.endswith(("\n", "\r")) else text


class _Part(BoundedMessage):
    """A `BoundedMessage` that finds a field through a dictionary: the walk asks each part for the same few
    fields many times, and `Message.get` compares every field's lowercased name each time. The same answers:
    the first field of that name, read through the policy; any change to the fields drops the dictionary.
    Its content type is remembered too (the walk asks for it a dozen times a part), while the fields, the
    default type and the policy stay as they were (the generator sets its own policy while it writes a part)."""

    _index: dict[str, tuple[str, str]] | None = None
    _type: tuple[str, str] | None = None  # (default type, content type) as last worked out

    def get_content_type(self) -> str:
        known = self._type
        if known is not None and known[0] == self._default_type and self.policy is POLICY:
            return known[1]
        ctype = super().get_content_type()
        self._type = (self._default_type, ctype) if self.policy is POLICY else None
        return ctype

    def _fields(self) -> dict[str, tuple[str, str]]:
        if self._index is None:
            index: dict[str, tuple[str, str]] = {}
            for name, value in self._headers:
                index.setdefault(name.lower(), (name, value))
            self._index = index
        return self._index

    def get(self, name, failobj=None):
        found = self._fields().get(name.lower())
        return failobj if found is None else self.policy.header_fetch_parse(*found)

    def __contains__(self, name) -> bool:
        return name.lower() in self._fields()

    def set_raw(self, name, value) -> None:
        self._index = self._type = None
        super().set_raw(name, value)

    def __setitem__(self, name, value) -> None:
        self._index = self._type = None
        super().__setitem__(name, value)

    def __delitem__(self, name) -> None:
        self._index = self._type = None
        super().__delitem__(name)

    def replace_header(self, name, value) -> None:
        self._index = self._type = None
        super().replace_header(name, value)

    def add_header(self, name, value, **params) -> None:
        self._index = self._type = None
        super().add_header(name, value, **params)

    def set_boundary(self, boundary) -> None:
        self._index = self._type = None
        super().set_boundary(boundary)


def _last_read(part: Message) -> Message:
    """The message the feed parser made last while reading `part` (its `_last`): the part itself, or for a
    forwarded mail the mail inside it (a multipart counts as made last once its parts are read)."""
    while isinstance(part._payload, list) and part.get_content_maintype() != "multipart":
        part = part._payload[-1]
    return part


class _NotSimple(Exception):
    """The mail is not simply built: the feed parser reads it."""


def parse_mail(raw: bytes, *, max_size: int = DEFAULT_MAX_SIZE, headers: bool = True) -> ParsedMail:
    """`parse.parse_message`, through the fast path when the mail qualifies. Never raises."""
    raw = _as_bytes(raw)
    if len(raw) <= max_size:
        try:
            root = read_simple(raw)
            if root is not None:
                return parse_tree(raw, root, headers=headers)
        except Exception:  # noqa: BLE001 - whatever the fast path trips on, the stdlib path reads
            pass
    return parse_message(raw, max_size=max_size, headers=headers)


def read_simple(raw: bytes) -> Message | None:
    """The tree `headers.read_message(raw)` gives, if the mail is simply built (see the module doc); else None."""
    if b"\r" in raw and _LONE_CR_RE.search(raw):
        return None  # a lone CR is a line break to the feed parser: not worth the special case here
    text = raw.decode("ascii", "surrogateescape")
    try:
        builder = _Builder(text)
        return builder.message(0, len(text), depth=0, root=True)
    except _NotSimple:
        return None


class _Builder:
    def __init__(self, text: str) -> None:
        self.text = text
        self.parts = 0
        self.open: list[str] = []  # boundaries of the enclosing multiparts

    def message(self, start: int, end: int, depth: int, root: bool = False) -> Message:
        """The part in text[start:end] (for a part of a multipart: between its boundary lines, the line
        break before the next boundary line included, as the feed parser reads it)."""
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise _NotSimple
        msg = _Part(policy=POLICY)
        body = self._headers(msg, start, end, root)
        maintype = msg.get_content_maintype()
        ctype = msg.get_content_type()
        if ctype == "multipart/digest":
            raise _NotSimple
        if ctype == "message/delivery-status":
            msg._payload = self._delivery_status(body, end)
        elif maintype == "multipart":
            self._multipart(msg, body, end, depth)
        elif maintype == "message":  # a forwarded mail: a mail of its own, as the feed parser reads it
            if depth + 1 >= MAX_DEPTH:
                raise _NotSimple
            msg._payload = [self.message(body, end, depth + 1)]
        else:
            msg._payload = self.text[body:end]
        return msg

    def _headers(self, msg: Message, start: int, end: int, root: bool, block: bool = False) -> int:
        """Read the header block at `start` into `msg` (as feedparser's `_parse_headers`); where the body starts.
        `block`: a block of a delivery status, which ends at an empty line (returned: where that line starts) or
        at `end`. The fields are found by two regular expressions over the block, not line by line."""
        text = self.text
        pos = start
        if root and text.startswith("From ", pos):  # an envelope line, first line of the mail only
            nl = text.find("\n", pos, end)
            if nl < 0:
                raise _NotSimple
            msg.set_unixfrom(_without_eol(text[pos:nl + 1]))
            pos = nl + 1
        fields_end = _FIELDS_RE.match(text, pos, end).end()
        if fields_end < end:
            # The block must end at an empty line: any other line is not a field (the feed parser notes a defect
            # and the stdlib path repairs the mail), or a continuation line with no field before it.
            if text.startswith("\n", fields_end):
                stop = fields_end + 1
            elif text.startswith("\r\n", fields_end):
                stop = fields_end + 2
            else:
                raise _NotSimple
            stop = fields_end if block else stop
        elif block:
            stop = end
        else:
            raise _NotSimple  # no empty line after the header block
        msg._headers = [(name, value.rstrip("\r\n")) for name, value in _FIELD_RE.findall(text, pos, fields_end)]
        msg._index = None
        return stop

    def _delivery_status(self, start: int, end: int) -> list[Message]:
        """A delivery status (RFC 3464), as the feed parser reads it: blocks of fields separated by an empty line,
        each a message without a body."""
        blocks: list[Message] = []
        pos = start
        while True:
            self.parts += 1
            if self.parts > MAX_PARTS:
                raise _NotSimple
            block = _Part(policy=POLICY)
            pos = self._headers(block, pos, end, root=False, block=True)
            block._payload = ""
            blocks.append(block)
            if pos >= end:
                return blocks
            pos = self.text.find("\n", pos, end) + 1  # past the empty line (it ends in a line break)
            if pos >= end:
                return blocks

    def _multipart(self, msg: Message, start: int, end: int, depth: int) -> None:
        """Cut text[start:end] at the lines naming the boundary of `msg`, as feedparser's multipart branch does."""
        boundary = msg.get_boundary()
        if not boundary or boundary in self.open or depth >= MAX_DEPTH:
            raise _NotSimple
        if str(msg.get("content-transfer-encoding", "8bit")).lower() not in ("7bit", "8bit", "binary"):
            msg.defects.append(errors.InvalidMultipartContentTransferEncodingDefect())  # as the feed parser notes
        separator = "--" + boundary
        text = self.text
        marks: list[tuple[int, int, bool]] = []  # (line start, line end, closing) of each boundary line
        pos = start
        while True:
            at = text.find(separator, pos, end)
            if at < 0:
                break
            pos = at + len(separator)
            if at != start and text[at - 1] != "\n":
                continue
            nl = text.find("\n", at, end)
            stop = end if nl < 0 else nl + 1
            line = text[at:stop]
            found = _BOUNDARY_TAIL_RE.match(line, len(separator))
            if found is None:
                continue
            for other in self.open:  # a line naming an enclosing boundary would end this part early
                if line.startswith("--" + other):
                    raise _NotSimple
            marks.append((at, stop, bool(found.group("end"))))
            if found.group("end"):
                break
            pos = stop
        closed = bool(marks) and marks[-1][2]
        if not marks or marks[0][2] or (closed and len(marks) < 2):
            raise _NotSimple  # no opening boundary, or no parts
        if any(a[1] == b[0] for a, b in zip(marks, marks[1:])):
            raise _NotSimple  # two boundary lines in a row (an empty part)
        if self._names_open_boundary(text, start, marks[0][0]):
            raise _NotSimple
        # Each part runs from a boundary line to the next; without a closing boundary the last one runs to the end.
        sections = list(zip([m[1] for m in marks[:-1]], [m[0] for m in marks[1:]]))
        if not closed:
            if marks[-1][1] >= end:
                raise _NotSimple  # the mail ends on a boundary line
            sections.append((marks[-1][1], end))
        if marks[0][0] > start:
            msg.preamble = _without_eol(text[start:marks[0][0]])
        self.open.append(boundary)
        parts = []
        for part_start, part_end in sections:
            part = self.message(part_start, part_end, depth + 1)
            last = _last_read(part)  # the line break before a boundary line is the boundary's: off what was read last
            if last.get_content_maintype() == "multipart":
                epilogue = last.epilogue
                if epilogue is not None:
                    last.epilogue = None if epilogue == "" else _without_eol(epilogue)
            else:
                last._payload = _without_eol(last._payload)
            parts.append(part)
        self.open.pop()
        msg._payload = parts
        if not closed:  # as the feed parser reads a multipart cut short: a defect, and no epilogue
            msg.defects.append(errors.CloseBoundaryNotFoundDefect())
            return
        closing_end = marks[-1][1]
        if self._names_open_boundary(text, closing_end, end):
            raise _NotSimple
        msg.epilogue = text[closing_end:end]

    def _names_open_boundary(self, text: str, start: int, end: int) -> bool:
        """Does a line of text[start:end] (a preamble or epilogue) start with an enclosing boundary?"""
        return any(text.startswith("--" + other, start) or text.find("\n--" + other, start, end) >= 0
                   for other in self.open)
