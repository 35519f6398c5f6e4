"""The example agent of docs/agents.md (the page shows this file; a test keeps them equal).

Enable it with

    [agents]
    enabled = ["postwerk.transport.agents_example:ScannedHeaderAgent"]

    [agents.options.ScannedHeaderAgent]
    forbidden_subjects = ["lottery", "wire transfer"]
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from postwerk.mime.summary import decode_words
from postwerk.transport.agents import (
    AgentResult,
    MessageView,
    SessionView,
    TransportAgent,
    Verdict,
)


class ScannedHeaderAgent(TransportAgent):
    """Stamps every message with X-Postwerk-Scanned; refuses forbidden subjects."""

    def __init__(self, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(options)
        words = self.options.get("forbidden_subjects", ["forbidden"])
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError("forbidden_subjects: a list of strings")
        self.forbidden = [w.lower() for w in words]

    async def on_end_of_headers(self, session: SessionView, message: MessageView) -> AgentResult:
        # Header values come raw: decode RFC 2047 words before comparing.
        subject = decode_words(message.headers.get("Subject") or "").lower()
        if any(word in subject for word in self.forbidden):
            # The client hears this reply after it has sent the whole message.
            return Verdict.reject(550, "5.7.1", "Message rejected: forbidden subject")
        tls = "tls" if session.tls else "plain"
        return Verdict.add_headers(("X-Postwerk-Scanned", f"ScannedHeaderAgent; {tls}"))
