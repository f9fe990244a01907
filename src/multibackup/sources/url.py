"""Source and restore-target URLs: which module serves which scheme.

``backup URL`` and ``restore --target URL`` come here. Modules are imported on first use,
so a missing optional dependency only matters to the scheme that needs it. Any location
the backends understand (``s3://``, ``azure://``, provider presets, ...) that has no source
module of its own is read as a bucket source.

Secrets are never part of a URL here: ``user:password@`` is refused because the URL would
show in the process list; passwords come from ``credentials`` (the config layer) or the
environment (``MULTIBACKUP_SOURCE_PASSWORD`` and each module's own variables).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from urllib.parse import urlsplit

from multibackup.errors import UsageError
from multibackup.sources.base import RestoreTarget, TreeSource

# scheme -> module below multibackup.sources
MODULES: dict[str, str] = {
    "sftp": "sftp",
    "ftp": "ftp",
    "ftps": "ftp",
    "mysql": "mysql",
    "mariadb": "mysql",
    "postgresql": "postgres",
    "postgres": "postgres",
    "sqlite": "sqlite",
    "redis": "redis",
    "rediss": "redis",
}

PASSWORD_ENV = "MULTIBACKUP_SOURCE_PASSWORD"


def scheme_of(text: str) -> str | None:
    """The URL scheme of ``text`` in lower case, or None for a plain local path."""
    scheme, sep, _ = text.partition("://")
    if not sep or not scheme or "/" in scheme:
        return None
    return scheme.lower()


def is_url(text: str) -> bool:
    return scheme_of(text) is not None


def _module_for(text: str) -> object:
    scheme = scheme_of(text)
    if scheme is None:
        raise UsageError(f"{text!r} is not a source URL")
    if scheme not in MODULES and scheme != "file":
        name = "bucket"
    elif scheme == "file":
        raise UsageError("a file:// URL names a local path: give the path itself")
    else:
        name = MODULES[scheme]
    parts = urlsplit(text)
    if parts.password:
        raise UsageError(f"{scheme}:// URL carries a password, which would show in the process "
                         f"list: give it in the config file or ${PASSWORD_ENV}")
    return importlib.import_module(f"multibackup.sources.{name}")


def open_source(url: str, credentials: Mapping[str, str] | None = None) -> TreeSource:
    """The source a URL names; raises ``UsageError`` (bad URL) or ``SourceError``."""
    return _module_for(url).open_source(url, credentials or {})  # type: ignore[attr-defined,no-any-return]


def open_target(url: str, credentials: Mapping[str, str] | None = None) -> RestoreTarget:
    """The restore target a URL names."""
    module = _module_for(url)
    if not hasattr(module, "open_target"):
        raise UsageError(f"{scheme_of(url)}:// cannot be a restore target")
    return module.open_target(url, credentials or {})  # type: ignore[attr-defined,no-any-return]


def redacted(url: str) -> str:
    """A URL safe to print: any password replaced."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return parts._replace(netloc=netloc).geturl()
