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


class NotPermitted(PostwerkError):
    """The object exists, but this operation on it is refused by policy."""


class FolderNotFound(NotFound):
    pass


class DefaultFolderProtected(NotPermitted):
    """Exchange's default folders (Inbox, Sent Items, ...) cannot be renamed or deleted."""


class FolderHasChildren(NotPermitted):
    """A folder with subfolders cannot be deleted (we keep no \\Noselect remnants)."""


class MailboxNotFound(NotFound):
    pass


class ItemNotFound(NotFound):
    pass


class QuotaExceeded(PostwerkError):
    pass
