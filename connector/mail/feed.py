"""The stdlib's feed parser, bounded for hostile mail.

`email.feedparser` does the parsing (the MIME tree, defects, every quirk it knows). Where it costs more
than linear time, or seconds of Python per megabyte, on crafted mail, this module steps in without
changing any result (tests/test_fuzz.py compares the two on mutated real-world mail):

- Every line is checked against the boundary pattern of every enclosing multipart, so a mail nested
  N deep costs N regular-expression matches a line. Here a line that cannot be a boundary (it does
  not start with "--", or it names no open boundary: one dictionary lookup) skips that check.
- A part's body is handed over line by line through three layers of Python. Here the lines of a body
  go over as one string (found with ``str.find``), and the body of a mail that is not multipart is
  taken at once.
- Nesting has no limit (10,000 nested parts end in a RecursionError and lose the whole structure).
  Here a part with `MAX_NESTING` or more enclosing parts is read the way the stdlib reads a part
  without a usable boundary: its headers are parsed, its body is kept as it came.
- Every part costs a Message, a header parse and a generator (some 100 µs), and 36 MB hold a million
  tiny parts. Here, from the `PART_LIMIT`-th part on, only closing boundaries end a part, so the last
  part read keeps the rest of its multipart as its body (parse.py drops parts long before that).
- ``Message.get_param`` and everything built on it (boundary, charset, file name) re-splits the
  header on every call by slicing off one parameter at a time: quadratic in the number of
  parameters, and in the number of ``;`` inside an unclosed quote. `_parse_params` gives the same
  list in one pass (the fix CPython made in gh-136063, for the Pythons that lack it), once per value.
"""
from __future__ import annotations

import re
from email import utils
from email.feedparser import BufferedSubFile, FeedParser
from email.message import Message
from email.policy import Policy
from itertools import islice

MAX_NESTING = 40  # a part inside this many others is kept as it came (parse.py attaches it whole)
PART_LIMIT = 10_000  # parts split off a mail at most (parse.py uses 5,000 of them)
_CHUNK = 65536  # characters handed to the feed parser at a time (it splits lines per chunk)
_BLOCK_LINES = 512  # body lines joined at a time while looking for the next boundary

# How feedparser builds its boundary matcher; a pattern of any other shape is checked the slow way.
_PREFIX = "(?P<sep>"
_SUFFIX = r")(?P<end>--)?(?P<ws>[ \t]*)(?P<linesep>\r\n|\r|\n)?$"
_UNESCAPE_RE = re.compile(r"\\(.)", re.S)


def _boundary_of(predicate) -> str | None:
    """The boundary a feedparser end-of-part predicate looks for, or None for any other predicate."""
    pattern = getattr(getattr(predicate, "__self__", None), "pattern", None)
    if not isinstance(pattern, str) or not pattern.startswith(_PREFIX) or not pattern.endswith(_SUFFIX):
        return None
    separator = _UNESCAPE_RE.sub(r"\1", pattern[len(_PREFIX):-len(_SUFFIX)])
    if not separator.startswith("--") or _PREFIX + re.escape(separator) + _SUFFIX != pattern:
        return None
    boundary = separator[2:]
    return boundary if boundary and boundary[-1] not in " \t" else None


def _next_dashes(text: str, pos: int) -> int:
    """Start of the next line at or after `pos` that begins with "--" (lines end in \\n, \\r\\n or \\r)."""
    since = max(0, pos - 1)
    found = [i + 1 for i in (text.find("\n--", since), text.find("\r--", since)) if i >= 0]
    return min(found) if found else -1


def _line_end(text: str, start: int) -> int:
    ends = [i + 1 for i in (text.find("\n", start), text.find("\r", start)) if i >= 0]
    return min(ends) if ends else len(text)


class _Lines(BufferedSubFile):
    """Lines of the mail for the parser; answers "not a boundary" for most lines without trying each one."""

    def __init__(self) -> None:
        super().__init__()
        self._kinds: list[str | None] = []  # per end-of-part predicate: its boundary, None if another kind
        self._open: dict[str, int] = {}  # boundaries of the enclosing multiparts, with how often each is open
        self._others = 0  # predicates that are not boundary matchers (message/delivery-status blocks)
        self._known: dict[str, str | None] = {}  # pattern -> boundary, so each multipart's is worked out once
        self.bulk = False  # set while the parser reads a body it keeps whole (no header or boundary logic)
        self.closing_only = False  # set once enough parts are split off: only closing boundaries count

    def push_eof_matcher(self, pred) -> None:
        super().push_eof_matcher(pred)
        pattern = getattr(getattr(pred, "__self__", None), "pattern", None)
        if pattern not in self._known:
            self._known[pattern] = _boundary_of(pred)
        boundary = self._known[pattern]
        self._kinds.append(boundary)
        if boundary is None:
            self._others += 1
        else:
            self._open[boundary] = self._open.get(boundary, 0) + 1

    def pop_eof_matcher(self):
        pred = super().pop_eof_matcher()
        boundary = self._kinds.pop()
        if boundary is None:
            self._others -= 1
        elif self._open[boundary] == 1:
            del self._open[boundary]
        else:
            self._open[boundary] -= 1
        return pred

    def readline(self):
        lines = self._lines
        if lines and not self._others:
            if self.bulk:  # a part's body: hand over every line up to the next boundary as one string
                body = self._body_lines()
                if body:
                    return body
            elif not (self._eofstack and lines[0].startswith("--") and self._names_open_boundary(lines[0])):
                return lines.popleft()
        line = super().readline()
        if line == "":
            self.bulk = False  # the body ended (at a boundary or at the end)
        return line

    def _body_lines(self) -> str:
        """The buffered lines up to the first one naming an open boundary, joined, and taken off the buffer.

        Lines are looked at in blocks joined by C code, and only the lines of a block that start with "--"
        one by one, so a body costs next to nothing a line."""
        lines = self._lines
        taken: list[str] = []
        size = 4  # lines joined at once, doubling: a short body costs little, a long one few joins
        while lines:
            block = "".join(islice(lines, size))
            end = self._boundary_in(block) if self._eofstack else -1
            if end < 0:
                count = min(len(lines), size)
                size = min(2 * size, _BLOCK_LINES)
                taken.append(block)
            else:
                count = block.count("\n", 0, end) + block.count("\r", 0, end) - block.count("\r\n", 0, end)
                taken.append(block[:end])
            for _ in range(count):
                lines.popleft()
            if end >= 0:
                break
        return "".join(taken)

    def _boundary_in(self, block: str) -> int:
        """Where the first line of `block` that names an open boundary starts, or -1."""
        start = 0 if block.startswith("--") else _next_dashes(block, 0)
        while start >= 0:
            if self._names_open_boundary(block[start:_line_end(block, start)]):
                return start
            start = _next_dashes(block, start + 2)
        return -1

    def take_all(self) -> str:
        """Everything pushed and not read yet, as one string; the buffer is left empty."""
        text = "".join(self._lines) + self._partial.getvalue()
        self._lines.clear()
        self._partial.seek(0)
        self._partial.truncate()
        return text

    def _names_open_boundary(self, line: str) -> bool:
        # feedparser's pattern: "--" boundary ["--"] [ \t]* [line end]; boundaries never end in white space.
        rest = line.rstrip("\r\n").rstrip(" \t")[2:]
        closing = rest.endswith("--") and rest[:-2] in self._open
        return closing if self.closing_only else closing or rest in self._open


class BoundedMessage(Message):
    """`email.message.Message` whose parameter parsing takes one pass (see the module doc), once per header
    value: the parser and parse.py ask a part for its boundary, charset, name, format ... one at a time."""

    _params: dict | None = None

    def _get_params_preserve(self, failobj, header):
        missing = object()
        value = self.get(header, missing)
        if value is missing:
            return failobj
        cached = self._params.get(header) if self._params is not None else None
        if cached is None or cached[0] != value:
            params = []
            for p in _parse_params(value):
                name, sep, val = p.partition("=")
                params.append((name.strip(), val.strip()) if sep else (p.strip(), ""))
            cached = (value, utils.decode_params(params))
            if self._params is None:
                self._params = {}
            self._params[header] = cached
        return list(cached[1])


def _parse_params(value: object) -> list[str]:
    """``email.message._parseparam`` in one pass: the same list for every input.

    A parameter ends at the next ``;`` outside double quotes (a quote preceded by a backslash does not
    count); the quote counts are kept up to date instead of being recounted from the parameter's start.
    """
    s = ";" + str(value)
    out: list[str] = []
    pos = 0
    while pos < len(s) and s[pos] == ";":
        start = pos + 1
        end = s.find(";", start)
        counted = start
        quotes = 0
        while end > start:
            quotes += s.count('"', counted, end) - s.count('\\"', counted, end)
            counted = end
            if not quotes % 2:
                break
            end = s.find(";", end + 1)
        if end < 0:
            end = len(s)
        f = s[start:end]
        if "=" in f:
            i = f.index("=")
            f = f[:i].strip().lower() + "=" + f[i + 1:].strip()
        out.append(f.strip())
        pos = end
    return out


class _Parser(FeedParser):
    def __init__(self, policy: Policy, max_nesting: int) -> None:
        super().__init__(BoundedMessage, policy=policy)
        self._input = _Lines()
        self._max_nesting = max_nesting
        self._parts = 0
        self.verbatim: str | None = None  # the root's body so far, once known to be kept as it came

    def _new_message(self) -> None:
        super()._new_message()
        self._parts += 1
        if self._parts >= PART_LIMIT:
            self._input.closing_only = True

    def _parse_headers(self, lines) -> None:
        super()._parse_headers(lines)
        leaf = self._cur.get_content_maintype() not in ("multipart", "message")
        if leaf and len(self._msgstack) == 1 and not self._headersonly:
            # feedparser would now join every remaining line into the payload: take them at once instead.
            self.verbatim = self._input.take_all()
        elif leaf or self._headersonly:
            # feedparser now joins the lines up to the part's end into its payload, nothing else.
            self._input.bulk = True

    def _parsegen(self):
        if len(self._msgstack) < self._max_nesting or self._headersonly:
            return (yield from super()._parsegen())
        # Too deep: headers parsed, body kept whole, as the stdlib does for headers-only parsing.
        self._headersonly = True
        try:
            return (yield from super()._parsegen())
        finally:
            self._headersonly = False


def parse_bytes(raw: bytes, policy: Policy, *, headers_only: bool = False,
                max_nesting: int = MAX_NESTING) -> Message:
    """``BytesParser(policy=policy).parsebytes(raw, headersonly=headers_only)``, bounded.

    A mail that is neither multipart nor message/* gets its body as it came without the parser reading
    it line by line (a Python loop per line: seconds for a few MB of short lines): `_Parser` takes the
    body as soon as the root's headers say what it is, and the rest of the input is appended unread.
    """
    parser = _Parser(policy, max_nesting)
    if headers_only:
        parser._set_headersonly()
    text = raw.decode("ascii", "surrogateescape")
    unread = ""
    for start in range(0, len(text), _CHUNK):
        parser.feed(text[start:start + _CHUNK])
        if parser.verbatim is not None:
            unread = text[start + _CHUNK:]
            break
    root = parser.close()  # (the root's headers may only end here, when the last line has no line break)
    if parser.verbatim is not None:
        root._payload = parser.verbatim + unread
    return root
