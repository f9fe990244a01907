"""A wrapper that keeps a password or key out of reprs, tracebacks and ``vars()`` dumps."""

from __future__ import annotations


class Secret:
    """A secret value that prints as ``***``; read it as ``.value`` where it is used."""

    __slots__ = ("value",)

    def __init__(self, value: str) -> None:
        self.value = value

    def __repr__(self) -> str:
        return "***"
