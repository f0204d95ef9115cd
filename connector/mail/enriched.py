"""text/enriched (RFC 1896) and its predecessor text/richtext (RFC 1341) as plain text, as mail clients
show them: formatting commands dropped, `<param>` contents dropped, `<<` a "<", and line breaks read the
RFC's way (one line break is a space, n > 1 are n - 1; inside `<nofill>` every line break stays)."""
from __future__ import annotations

import re

ENRICHED_TYPES = frozenset({"text/enriched", "text/richtext"})
_TOKEN_RE = re.compile(r"<<|<(/?)([A-Za-z0-9-]{1,60})>|\n+|[^<\n]+|<", re.S)


def enriched_to_text(text: str, ctype: str = "text/enriched") -> str:
    """Plain text of a text/enriched (or text/richtext) body; never raises."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    richtext = ctype == "text/richtext"  # RFC 1341: line breaks are plain spaces, <nl> is a line break
    out: list[str] = []
    nofill = param = 0
    for match in _TOKEN_RE.finditer(text):
        token = match.group(0)
        name = (match.group(2) or "").lower()
        if token == "<<":
            out.append("" if param else "<")
        elif name:
            closing = match.group(1) == "/"
            step = -1 if closing else 1
            if name == "param":
                param = max(0, param + step)
            elif name == "nofill":
                nofill = max(0, nofill + step)
            elif richtext and name in ("nl", "np") and not closing:
                out.append("\n")
        elif param:
            continue
        elif token.startswith("\n"):
            if richtext:
                out.append(" ")
            elif nofill:
                out.append(token)
            else:
                out.append(" " if len(token) == 1 else "\n" * (len(token) - 1))
        else:
            out.append(token)
    return "".join(out)
