"""Identifiers: message ids, session ids, queue ids."""

from __future__ import annotations

import os
import time


def new_id() -> str:
    """A sortable, unique 20-character hex id: 12 hex of time in µs, 8 random."""
    return f"{time.time_ns() // 1000:013x}{os.urandom(4).hex()}"[-20:]
