"""Errors that reach the user: each carries a one-line message and a process exit code.

Every layer raises these (or subclasses) so that the CLI can print one clean line and
exit with a documented code, never a traceback and never a secret.
"""

from __future__ import annotations


class MultibackupError(Exception):
    """Base error; ``exit_code`` is what the CLI exits with."""

    exit_code = 1

    def __str__(self) -> str:
        # One line, always: wrapped library errors can be multi-line.
        text = super().__str__()
        return " ".join(text.split()) if text else self.__class__.__name__


class StoreError(MultibackupError):
    """A backend or store could not carry out an operation."""


class ObjectNotFound(StoreError):
    """The named object does not exist in the store."""


class ObjectExists(StoreError):
    """A create-only put found the object already there."""


class StorageFull(StoreError):
    """The destination has no space left; nothing already stored was touched."""


class RepositoryNotFound(MultibackupError):
    exit_code = 10


class RepositoryExists(MultibackupError):
    pass


class WrongPassword(MultibackupError):
    exit_code = 12


class LockConflict(MultibackupError):
    exit_code = 11


class IntegrityError(MultibackupError):
    """Stored data failed authentication or its hash does not match its name."""


class UsageError(MultibackupError):
    """The command line or configuration is invalid."""

    exit_code = 2


class SourceError(MultibackupError):
    """A backup source or restore target failed: unreachable, refused, or a dump that died."""


class SourceUnavailable(SourceError):
    """The source cannot be reached any more: the backup stops and writes no snapshot.

    Unlike a single unreadable file (skipped and named), a lost server would leave a
    snapshot that silently lacks everything not read yet.
    """
