"""The fast path for address lists (`simple_addresses`) gives what `email.utils.getaddresses` gives,
or declines; it must never change a result, only skip the stdlib's slow parser."""
from __future__ import annotations

import random
from email.parser import BytesHeaderParser
from email.utils import getaddresses

import pytest

from connector.mail import headers
from connector.mail.headers import parse_address_list, simple_addresses
from tests.corpus import CORPUS_DIR, corpus_names


@pytest.mark.parametrize("text, expected", [
    ("ann@example.net", [("", "ann@example.net")]),
    ("Ann Smith <Ann@Example.net>", [("Ann Smith", "Ann@Example.net")]),
    ('"Smith, Ann" <ann@example.net>, bob@example.net', [("Smith, Ann", "ann@example.net"), ("", "bob@example.net")]),
    ("John  Q.\tPublic <jq@x.org>", [("John Q. Public", "jq@x.org")]),
    ("<jq@x.org>", [("", "jq@x.org")]),
    ('"" <jq@x.org>', [("", "jq@x.org")]),
    ("O'Brien <ob@x.ie>", [("O'Brien", "ob@x.ie")]),
    ("Jürgen Müller <jm@x.de>", [("Jürgen Müller", "jm@x.de")]),
])
def test_common_forms_take_the_fast_path(text, expected):
    assert simple_addresses(text) == expected == getaddresses([text])


@pytest.mark.parametrize("text", [
    "ann@example.net, , bob@example.net",  # empty entry
    "Ann <ann@example.net> (work)",         # comment
    "a..b@example.net",                      # not a dot-atom
    'Ann "the boss" Smith <ann@x.net>',      # quoted part inside words
    '"Ann \\"A\\" Smith" <ann@x.net>',       # escaped quote
    "undisclosed-recipients:;",              # group
    "Ann < ann@example.net >",               # spaces inside the brackets
    "Ann\u00a0Smith <ann@x.net>",            # a no-break space
    "ann@[192.0.2.1]",                       # domain literal
    "",
])
def test_anything_else_goes_to_the_stdlib(text):
    assert simple_addresses(text) is None


FRAGMENTS_NAME = ["Ann", "Smith", "Q.", "O'Brien", "Jürgen", "\ue0000\ue001", "a@b", "(c)", '"x"', '"Smith, Ann"',
                  '""', '"a\\"b"', "<", ">", ",", ";", ":", "\\", "[x]", "\u00a0", "\t", "  "]
FRAGMENTS_ADDR = ["ann@example.net", "a.b@c.d", "a..b@c", "@c", "a@", "x+tag@sub.example.org", "UPPER@X.NET",
                  "a b@c", "a@b@c", "a@[1.2.3.4]", "'quote'@x.y"]


def _random_list(rng: random.Random) -> str:
    entries = []
    for _ in range(rng.randint(1, 3)):
        addr = rng.choice(FRAGMENTS_ADDR)
        shape = rng.random()
        if shape < 0.3:
            entries.append(addr)
        else:
            name = rng.choice([" ", "  ", "\t", ""]).join(rng.choice(FRAGMENTS_NAME)
                                                          for _ in range(rng.randint(0, 3)))
            entries.append(f"{name}{rng.choice(['', ' ', '  '])}<{addr}>{rng.choice(['', ' '])}")
    return rng.choice([",", ", ", " ,", ",,"]).join(entries)


def test_random_lists_agree_with_the_stdlib():
    rng = random.Random(20261201)
    fast = 0
    for _ in range(20_000):
        text = _random_list(rng)
        pairs = simple_addresses(text)
        if pairs is not None:
            fast += 1
            assert pairs == getaddresses([text]), text
    assert fast > 1_500  # the comparison is not vacuous (2,260 of the 20,000 with this seed)


@pytest.mark.skipif(not corpus_names(), reason=f"mail corpus not at {CORPUS_DIR}")
def test_corpus_address_fields_parse_as_with_the_stdlib_alone(monkeypatch):
    fields = []
    for name in corpus_names():
        msg = BytesHeaderParser(policy=headers._AsParsed()).parsebytes((CORPUS_DIR / f"{name}.box").read_bytes())
        fields += [headers.header_text(str(v)) for f in ("from", "to", "cc", "reply-to", "sender")
                   for v in msg.get_all(f, [])]
    ours = [parse_address_list(text) for text in fields]
    fast = sum(simple_addresses(text) is not None for text in fields)
    monkeypatch.setattr(headers, "simple_addresses", lambda text: None)
    assert ours == [parse_address_list(text) for text in fields]
    assert fast > len(fields) // 2, (fast, len(fields))
