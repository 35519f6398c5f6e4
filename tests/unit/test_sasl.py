"""SASL mechanisms: tables of client messages in, outcomes out; fuzzing never raises."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from postwerk.protocols.sasl.mechanisms import (
    CANCELLED,
    MAX_FIELD_OCTETS,
    MECHANISMS,
    Challenge,
    Credentials,
    LoginMechanism,
    PlainMechanism,
    SaslError,
    ServerMechanism,
    create,
    decode_response,
    encode_challenge,
)

# ---------------------------------------------------------------- PLAIN

PLAIN_TABLE: list[tuple[bytes, Credentials | type[SaslError]]] = [
    (b"\x00tim\x00tanstaaftanstaaf", Credentials("", "tim", "tanstaaftanstaaf")),  # RFC 4616 §4
    (b"Ursel\x00Kurt\x00xipj3plmq", Credentials("Ursel", "Kurt", "xipj3plmq")),  # RFC 4616 §4
    ("\x00jörg@example.de\x00pässwörd".encode(), Credentials("", "jörg@example.de", "pässwörd")),
    (b"\x00user\x00pass word with spaces", Credentials("", "user", "pass word with spaces")),
    (b"", SaslError),  # empty initial response "=": no NULs
    (b"user\x00pass", SaslError),  # one NUL
    (b"\x00user\x00pass\x00extra", SaslError),  # three NULs
    (b"\x00\x00pass", SaslError),  # empty authcid
    (b"\x00user\x00", SaslError),  # empty password
    (b"\x00us\xffer\x00pass", SaslError),  # not UTF-8
    (b"\x00user\x00" + b"p" * (MAX_FIELD_OCTETS + 1), SaslError),  # too long
    (b"\x00user\x00" + b"p" * MAX_FIELD_OCTETS, Credentials("", "user", "p" * MAX_FIELD_OCTETS)),
]


@pytest.mark.parametrize(("message", "expected"), PLAIN_TABLE)
def test_plain_initial_response(message: bytes, expected: Credentials | type[SaslError]) -> None:
    outcome = PlainMechanism().start(message)
    if isinstance(expected, Credentials):
        assert outcome == expected
    else:
        assert isinstance(outcome, SaslError)


@pytest.mark.parametrize(("message", "expected"), PLAIN_TABLE)
def test_plain_after_empty_challenge(
    message: bytes, expected: Credentials | type[SaslError]
) -> None:
    mech = PlainMechanism()
    assert mech.start(None) == Challenge(b"")  # RFC 4422 §5
    outcome = mech.step(message)
    if isinstance(expected, Credentials):
        assert outcome == expected
    else:
        assert isinstance(outcome, SaslError)


def test_plain_is_finished_after_outcome() -> None:
    mech = PlainMechanism()
    assert isinstance(mech.start(b"\x00a\x00b"), Credentials)
    assert isinstance(mech.step(b"\x00a\x00b"), SaslError)
    assert isinstance(mech.start(b"\x00a\x00b"), SaslError)


def test_plain_step_before_start_is_error() -> None:
    assert isinstance(PlainMechanism().step(b"\x00a\x00b"), SaslError)


def test_credentials_repr_hides_password() -> None:
    text = repr(Credentials("", "user", "hunter2"))
    assert "hunter2" not in text
    assert "user" in text


# ---------------------------------------------------------------- LOGIN


def test_login_two_challenges() -> None:
    mech = LoginMechanism()
    assert mech.start(None) == Challenge(b"Username:")
    assert mech.step(b"alice@example.com") == Challenge(b"Password:")
    assert mech.step(b"s3cret") == Credentials("", "alice@example.com", "s3cret")
    assert isinstance(mech.step(b"again"), SaslError)


def test_login_with_initial_username() -> None:
    mech = LoginMechanism()
    assert mech.start(b"alice") == Challenge(b"Password:")
    assert mech.step(b"pw") == Credentials("", "alice", "pw")


@pytest.mark.parametrize(
    ("username", "password"),
    [
        (b"", b"pw"),
        (b"alice", b""),
        (b"\xff", b"pw"),
        (b"alice", b"\xfe"),
        (b"a" * (MAX_FIELD_OCTETS + 1), b"pw"),
    ],
)
def test_login_rejects_empty_or_malformed(username: bytes, password: bytes) -> None:
    mech = LoginMechanism()
    mech.start(None)
    first = mech.step(username)
    if isinstance(first, SaslError):
        return
    assert first == Challenge(b"Password:")
    assert isinstance(mech.step(password), SaslError)


def test_login_step_before_start_is_error() -> None:
    assert isinstance(LoginMechanism().step(b"alice"), SaslError)


# ---------------------------------------------------------------- registry & codec


@pytest.mark.parametrize("name", ["PLAIN", "plain", "Login", "LOGIN"])
def test_create_known(name: str) -> None:
    mech = create(name)
    assert mech is not None
    assert mech.name == name.upper()
    assert mech.plaintext


@pytest.mark.parametrize("name", ["CRAM-MD5", "", "SCRAM-SHA-256", "PLAIN "])
def test_create_unknown(name: str) -> None:
    assert create(name) is None


def test_create_returns_fresh_state() -> None:
    a, b = create("LOGIN"), create("LOGIN")
    assert a is not None and b is not None and a is not b
    a.start(None)
    assert b.start(None) == Challenge(b"Username:")


def test_registry_is_read_only() -> None:
    assert list(MECHANISMS) == ["PLAIN", "LOGIN"]
    with pytest.raises(TypeError):
        MECHANISMS["X"] = PlainMechanism  # type: ignore[index]


def test_mechanisms_satisfy_protocol() -> None:
    mechs: list[ServerMechanism] = [PlainMechanism(), LoginMechanism()]
    assert [m.name for m in mechs] == ["PLAIN", "LOGIN"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (b"*", CANCELLED),  # RFC 4954 §4
        (b"*\r\n", CANCELLED),
        (b"=", b""),  # RFC 4954 §4 empty initial response
        (b"", b""),
        (b"\r\n", b""),
        (b"AHRpbQB0YW5zdGFhZnRhbnN0YWFm\r\n", b"\x00tim\x00tanstaaftanstaaf"),
        (b"VXNlcm5hbWU6", b"Username:"),
        (b"dXNlcg==", b"user"),
    ],
)
def test_decode_response(line: bytes, expected: bytes | SaslError) -> None:
    assert decode_response(line) == expected


@pytest.mark.parametrize("line", [b"dXNlcg", b"dXNl cg==", b"dXNlcg==AA", b"!!!!", b"**", b"\xff"])
def test_decode_response_rejects_bad_base64(line: bytes) -> None:
    result = decode_response(line)
    assert isinstance(result, SaslError)
    assert result != CANCELLED


def test_encode_challenge() -> None:
    assert encode_challenge(b"Username:") == b"VXNlcm5hbWU6"
    assert encode_challenge(b"") == b""


# ---------------------------------------------------------------- fuzzing


@given(st.binary(max_size=300))
def test_decode_response_never_raises(line: bytes) -> None:
    result = decode_response(line)
    assert isinstance(result, bytes | SaslError)


@given(st.binary(max_size=300))
def test_encode_decode_roundtrip(data: bytes) -> None:
    assert decode_response(encode_challenge(data)) == data


@given(
    st.sampled_from(sorted(MECHANISMS)),
    st.one_of(st.none(), st.binary(max_size=100)),
    st.lists(st.binary(max_size=100), max_size=4),
)
def test_mechanisms_never_raise(name: str, initial: bytes | None, responses: list[bytes]) -> None:
    mech = create(name)
    assert mech is not None
    outcome = mech.start(initial)
    for response in responses:
        assert isinstance(outcome, Challenge | Credentials | SaslError)
        outcome = mech.step(response)
    assert isinstance(outcome, Challenge | Credentials | SaslError)


@given(st.text(max_size=40), st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_plain_roundtrip(authzid: str, authcid: str, password: str) -> None:
    message = b"\x00".join(s.encode() for s in (authzid, authcid, password))
    outcome = PlainMechanism().start(base64.b64decode(base64.b64encode(message)))
    if "\x00" in authzid + authcid + password:
        assert isinstance(outcome, SaslError)
    else:
        assert outcome == Credentials(authzid, authcid, password)
