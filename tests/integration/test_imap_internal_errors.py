"""A store failure fails the command with NO [SERVERBUG], not the session."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from tests.integration.test_imap_condstore import Raw
from tests.integration.test_imap_service import ImapServer, imap  # noqa: F401 (fixture)


def test_store_failure_is_a_tagged_no(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    server: ImapServer = request.getfixturevalue("imap")
    a = Raw(server)
    try:
        a.ok("SELECT INBOX")

        async def failing(folder_id: int, uids: Sequence[int]) -> list[object]:
            raise OSError(5, "Input/output error")  # what a failing disk gives

        # Error injection only: the service under test is real, the store call fails.
        monkeypatch.setattr(server.org.server.mailbox_backend.mail, "item_briefs", failing)
        lines = a.cmd("UID FETCH 1:* (UID ENVELOPE)")
        assert lines[-1].startswith(f"t{a.n} NO [SERVERBUG] Internal error"), lines
        monkeypatch.undo()
        # The session goes on.
        assert len(a.ok("UID FETCH 1:* (UID ENVELOPE)")) == 4
    finally:
        a.close()
