"""The EHLO reply: which ESMTP extensions this listener offers (RFC 5321 §4.1.1.1).

Purpose: build the multi-line 250 reply from the listener's settings. The order
of the keywords follows Exchange 2013, which some admins and scripts compare
against. Keywords without a setting here are not implemented by postwerk.
"""

from __future__ import annotations

from collections.abc import Sequence

from postwerk.core.replies import Reply


def _check_text(name: str, value: str) -> None:
    # A CR or LF would let configuration (or a client-chosen name) inject reply lines.
    if "\r" in value or "\n" in value:
        raise ValueError(f"{name} must not contain line breaks")


def ehlo_lines(
    hostname: str,
    greeting_name: str,
    *,
    size: int | None,
    starttls: bool,
    auth_mechanisms: Sequence[str],
    chunking: bool = True,
    pipelining: bool = True,
    smtputf8: bool = True,
    dsn: bool = True,
    enhanced: bool = True,
    eightbit: bool = True,
    binarymime: bool = False,
    private: Sequence[str] = (),
) -> Reply:
    """The 250 reply to EHLO; serialise it with `to_bytes()` as usual.

    `size=None` omits SIZE; `size=0` advertises "no fixed maximum" (RFC 1870 §4).
    `private`: "X" keywords (RFC 5321 §4.1.5), last, e.g. XPWNEXTHOP on the Outbound
    Proxy Frontend connector. Raises ValueError for settings that cannot be advertised
    together.
    """
    _check_text("hostname", hostname)
    _check_text("greeting_name", greeting_name)
    if binarymime and not chunking:
        raise ValueError("BINARYMIME requires CHUNKING (RFC 3030 §3)")
    if size is not None and size < 0:
        raise ValueError("size must not be negative")
    for keyword in private:
        if not (keyword.startswith("X") and keyword.isascii() and keyword.isalnum()):
            raise ValueError(f"invalid private extension keyword {keyword!r}")
    for mechanism in auth_mechanisms:
        if not mechanism or not all(c.isascii() and (c.isalnum() or c in "-_") for c in mechanism):
            raise ValueError(f"invalid SASL mechanism name {mechanism!r}")
    lines = [f"{hostname} Hello [{greeting_name}]"]
    if size is not None:
        lines.append(f"SIZE {size}")  # RFC 1870
    if pipelining:
        lines.append("PIPELINING")  # RFC 2920
    if dsn:
        lines.append("DSN")  # RFC 3461
    if enhanced:
        lines.append("ENHANCEDSTATUSCODES")  # RFC 2034
    if starttls:
        lines.append("STARTTLS")  # RFC 3207
    if auth_mechanisms:
        lines.append("AUTH " + " ".join(m.upper() for m in auth_mechanisms))  # RFC 4954
    if eightbit:
        lines.append("8BITMIME")  # RFC 6152
    if binarymime:
        lines.append("BINARYMIME")  # RFC 3030 §3
    if chunking:
        lines.append("CHUNKING")  # RFC 3030 §2
    if smtputf8:
        lines.append("SMTPUTF8")  # RFC 6531
    lines.extend(private)
    # RFC 2034 §4: enhanced status codes are not used on the EHLO reply.
    return Reply(250, None, "\n".join(lines))
