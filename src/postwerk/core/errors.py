"""Protocol-neutral domain errors. Each protocol maps them to its own answer at its edge."""

from __future__ import annotations


class PostwerkError(Exception):
    """Base of every error the domain raises on purpose."""


class NotFound(PostwerkError):
    """A named object does not exist."""


class AlreadyExists(PostwerkError):
    """An object with that name or address exists already."""


class InvalidName(PostwerkError):
    """A name or address is not acceptable."""


class FolderNotFound(NotFound):
    pass


class MailboxNotFound(NotFound):
    pass


class ItemNotFound(NotFound):
    pass


class QuotaExceeded(PostwerkError):
    pass
