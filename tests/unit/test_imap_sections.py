"""Transfer decoding for FETCH BINARY (`protocols/imap/sections.py`)."""

from __future__ import annotations

import base64
import binascii

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postwerk.mime.summary import summarize
from postwerk.protocols.imap.sections import UnknownEncoding, binary_bytes, decode_transfer


@given(st.binary(max_size=2000))
def test_base64_round_trip(data: bytes) -> None:
    encoded = base64.encodebytes(data).replace(b"\n", b"\r\n")
    assert decode_transfer(encoded, "BASE64") == data


@given(st.binary(max_size=500))
def test_quoted_printable_round_trip(data: bytes) -> None:
    encoded = binascii.b2a_qp(data, istext=False)
    assert decode_transfer(encoded, "QUOTED-PRINTABLE") == data


@pytest.mark.parametrize(
    ("sloppy", "expected"),
    [
        (b"aGVsbG8", b"hello"),  # padding missing
        (b"aGVs\r\nbG8=\r\n", b"hello"),
        (b"aGVs bG8=!!", b"hello"),  # stray octets
        (b"aGVsbG8=x", b"hello"),  # a lone sextet after the end
        (b"", b""),
    ],
)
def test_base64_is_lenient(sloppy: bytes, expected: bytes) -> None:
    assert decode_transfer(sloppy, "base64") == expected


def test_identity_and_unknown_encodings() -> None:
    assert decode_transfer(b"a\x00b", "BINARY") == b"a\x00b"
    assert decode_transfer(b"abc", "7bit") == b"abc"
    with pytest.raises(UnknownEncoding):
        decode_transfer(b"begin 644 x", "X-UUENCODE")


def test_binary_bytes_single_part_and_missing_parts() -> None:
    message = b"Subject: s\r\nContent-Transfer-Encoding: base64\r\n\r\naGVsbG8=\r\n"
    root = summarize(message).bodystructure
    assert binary_bytes(message, 0, root, (1,)) == b"hello"
    assert binary_bytes(message, 0, root, ()) == message
    assert binary_bytes(message, 0, root, (2,)) is None
    assert binary_bytes(message, 0, root, (1, 1)) is None


def test_binary_bytes_counts_the_header_prefix() -> None:
    # Stored messages are a header prefix (Received:, ...) followed by the blob;
    # the summary's offsets index the blob.
    prefix = b"Received: from x\r\n"
    blob = b"Subject: s\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na=3Db\r\n"
    root = summarize(blob).bodystructure
    assert binary_bytes(prefix + blob, len(prefix), root, (1,)) == b"a=b\r\n"
