"""STORE and UID STORE (RFC 9051 §6.4.6, RFC 3501 §6.4.6) as raw transcripts."""

from __future__ import annotations

import re

from tests.protocol.imap.conftest import ImapTestServer, Session, append, message

_FETCH = re.compile(rb"\* ([0-9]+) FETCH \((UID [0-9]+ )?FLAGS \(([^)]*)\)\)")


def flags(lines: list[bytes]) -> list[tuple[int, set[str]]]:
    """(sequence number, flags) of `* n FETCH ([UID u ]FLAGS (...))` lines; flag order
    carries no meaning (RFC 9051 §2.3.2), so sets."""
    out = []
    for line in lines:
        m = _FETCH.fullmatch(line)
        assert m is not None, line
        out.append((int(m.group(1)), set(m.group(3).decode().split())))
    return out


def three(imap: ImapTestServer, folder: str) -> Session:
    s = imap.login()
    for n in range(3):
        append(s, folder, message(f"m{n}"))
    s.select(folder)
    return s


def test_store_flags_replace_add_remove(imap: ImapTestServer, folder: str) -> None:
    s = three(imap, folder)
    assert flags(s.ok(r"STORE 1 FLAGS (\Seen \Flagged)").untagged) == [(1, {"\\Flagged", "\\Seen"})]
    assert flags(s.ok(r"STORE 1 +FLAGS (\Answered)").untagged) == [
        (1, {"\\Answered", "\\Flagged", "\\Seen"})
    ]
    assert s.ok(r"STORE 1 -FLAGS (\Flagged \Seen)").untagged == [b"* 1 FETCH (FLAGS (\\Answered))"]
    assert s.ok("STORE 1 FLAGS ()").untagged == [b"* 1 FETCH (FLAGS ())"]


def test_store_silent(imap: ImapTestServer, folder: str) -> None:
    s = three(imap, folder)
    for text in (r"FLAGS.SILENT (\Seen)", r"+FLAGS.SILENT (\Draft)", r"-FLAGS.SILENT (\Seen)"):
        reply = s.expect(f"STORE 1:2 {text}", "OK")
        assert reply.untagged == [], text
    assert s.ok("FETCH 1:3 FLAGS").untagged == [
        b"* 1 FETCH (FLAGS (\\Draft))",
        b"* 2 FETCH (FLAGS (\\Draft))",
        b"* 3 FETCH (FLAGS ())",
    ]


def test_store_reports_every_message_of_the_set(imap: ImapTestServer, folder: str) -> None:
    s = three(imap, folder)
    s.ok(r"STORE 2 +FLAGS.SILENT (\Flagged)")
    # Unchanged messages are reported too: the client learns their current flags.
    assert s.ok(r"STORE 1:* +FLAGS (\Flagged)").untagged == [
        b"* 1 FETCH (FLAGS (\\Flagged))",
        b"* 2 FETCH (FLAGS (\\Flagged))",
        b"* 3 FETCH (FLAGS (\\Flagged))",
    ]


def test_store_keywords(imap: ImapTestServer, folder: str) -> None:
    s = three(imap, folder)
    assert flags(s.ok(r"STORE 1 +FLAGS ($Work Custom \Seen)").untagged) == [
        (1, {"\\Seen", "$Work", "Custom"})
    ]
    # Keywords compare case-insensitively: "$work" is the "$Work" already set.
    assert flags(s.ok("STORE 1 +FLAGS ($work)").untagged) == [(1, {"\\Seen", "$Work", "Custom"})]
    assert flags(s.ok("STORE 1 -FLAGS (custom)").untagged) == [(1, {"\\Seen", "$Work"})]
    assert s.ok("SEARCH KEYWORD $Work").untagged == [b"* SEARCH 1"]
    # Stored, not just shown: a new session sees them.
    t = imap.login()
    t.select(folder, examine=True)
    assert flags(t.ok("FETCH 1 FLAGS").untagged) == [(1, {"\\Seen", "$Work"})]


def test_store_flags_without_parentheses(imap: ImapTestServer, folder: str) -> None:
    s = three(imap, folder)
    assert flags(s.ok(r"STORE 2 +FLAGS \Seen \Flagged").untagged) == [(2, {"\\Flagged", "\\Seen"})]


def test_uid_store_includes_uid(imap: ImapTestServer, folder: str) -> None:
    s = three(imap, folder)
    assert s.ok(r"UID STORE 2:3 +FLAGS (\Deleted)").untagged == [
        b"* 2 FETCH (UID 2 FLAGS (\\Deleted))",
        b"* 3 FETCH (UID 3 FLAGS (\\Deleted))",
    ]
    assert s.ok(r"UID STORE 99 +FLAGS (\Deleted)").untagged == []  # no such UID: nothing


def test_store_in_read_only_mailbox(imap: ImapTestServer, folder: str) -> None:
    s = three(imap, folder)
    s.select(folder, examine=True)
    for text in (r"STORE 1 +FLAGS (\Seen)", r"UID STORE 1 FLAGS ()", r"STORE 1 -FLAGS.SILENT ()"):
        reply = s.expect(text, "NO", "READ-ONLY")
        assert reply.untagged == []
    assert s.ok("FETCH 1 FLAGS").untagged == [b"* 1 FETCH (FLAGS ())"]


def test_store_bad_input(imap: ImapTestServer, folder: str) -> None:
    s = three(imap, folder)
    for text in (
        r"STORE 1 +FLAGS (\Recent)",  # only the server sets \Recent (RFC 3501 §2.3.2)
        r"STORE 1 +FLAGS (\Bogus)",
        r"STORE 4 +FLAGS (\Seen)",
        r"STORE 0 +FLAGS (\Seen)",
        r"STORE 1 *FLAGS (\Seen)",
        r"STORE 1 +LABELS (\Seen)",
        r"STORE 1 +FLAGS (\Seen",
        "STORE 1 +FLAGS",
    ):
        reply = s.expect(text, "BAD")
        assert reply.untagged == [], text
    assert s.ok("FETCH 1 FLAGS").untagged == [b"* 1 FETCH (FLAGS ())"]


def test_store_needs_selected_mailbox(imap: ImapTestServer) -> None:
    s = imap.login()
    s.expect(r"STORE 1 +FLAGS (\Seen)", "BAD")
