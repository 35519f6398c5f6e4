"""`DotStuffer` (protocols/smtp/client.py): a body dot-stuffed piece by piece, as the
front end's relay streams it, equals `dot_stuff` of the whole body, wherever the
pieces are cut (inside a CRLF, right before a dot)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from postwerk.protocols.smtp.client import DotStuffer, dot_stuff


def stuffed(pieces: list[bytes]) -> bytes:
    stuffer = DotStuffer()
    return b"".join(stuffer.feed(p) for p in pieces) + stuffer.end()


BODY = st.lists(st.sampled_from([b"\r", b"\n", b".", b"a", b"\r\n", b"\r\n."]), max_size=40)


@given(BODY, st.lists(st.integers(min_value=0, max_value=60), max_size=8))
def test_pieces_stuff_like_the_whole(parts: list[bytes], cuts: list[int]) -> None:
    body = b"".join(parts)
    points = sorted({min(c, len(body)) for c in cuts})
    pieces = [body[a:b] for a, b in zip([0, *points], [*points, len(body)], strict=True)]
    assert stuffed(pieces) == dot_stuff(body)


def test_examples() -> None:
    assert stuffed([]) == b".\r\n"
    assert stuffed([b".a\r\n"]) == b"..a\r\n.\r\n"
    assert stuffed([b"a\r", b"\n.b"]) == b"a\r\n..b\r\n.\r\n"
    assert stuffed([b"a\r\n", b".", b"\r\n"]) == b"a\r\n..\r\n.\r\n"
    assert stuffed([b"no final line end"]) == b"no final line end\r\n.\r\n"
