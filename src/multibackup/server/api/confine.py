"""What an organisation may reach on the server's own machine: its folder, nothing else.

Local paths (a folder to back up, a local destination, an SQLite file, a key file) and
hook commands act on the server itself. The server's administrator may use them freely;
everyone else is held to their organisation's folder on the server and may not run
commands, or one organisation could read another's data (or the server's key) through a
backup, or run anything through a hook.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote, urlsplit

from multibackup.config.loader import CREDENTIAL_FORMS, PATH
from multibackup.server.api.context import Principal, ServerContext
from multibackup.server.api.problems import Problem
from multibackup.server.settings import ServerSettings

_PATH_KEYS = tuple(k for k, form in CREDENTIAL_FORMS.items() if form == PATH)


def folder_for(settings: ServerSettings, superadmin: bool, organisation_id: int) -> str | None:
    """A user's folder on the server (None: the administrator, not confined)."""
    if superadmin:
        return None
    return os.path.join(settings.organisations_root, str(organisation_id))


def folder_of(c: ServerContext, who: Principal) -> str | None:
    """The caller's folder on the server (None: the administrator, not confined)."""
    return folder_for(c.settings, who.superadmin, who.organisation_id)


def _inside(path: str, folder: str) -> bool:
    real = os.path.realpath(path)
    return real == folder or real.startswith(folder + os.sep)


def check_path(c: ServerContext, who: Principal, path: str, field: str) -> None:
    """403 unless the caller may use this path on the server."""
    folder = folder_of(c, who)
    if folder is not None and not _inside(path, folder):
        raise Problem(403, f"{field}: paths on the server must be below {folder} "
                           "(your organisation's folder)", field=field)


def check_config(c: ServerContext, who: Principal, config: dict[str, Any]) -> None:
    """A destination's or source's local location and file paths."""
    if folder_of(c, who) is None:
        return
    location = config.get("location")
    if isinstance(location, str) and "://" not in location and not location.startswith("s3:"):
        check_path(c, who, location.removeprefix("local:"), "location")
    url = config.get("url")
    if isinstance(url, str):
        check_url(c, who, url, "url")
    for key in _PATH_KEYS:
        value = config.get(key)
        if isinstance(value, str):
            check_path(c, who, value, key)


def check_url(c: ServerContext, who: Principal, url: str, field: str) -> None:
    """A source URL that names a file on the server (sqlite://, file://) is a path."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return
    if parts.scheme in ("sqlite", "file"):
        check_path(c, who, unquote(parts.path) or "/", field)


def check_plan(c: ServerContext, who: Principal, sources: list[str],
               hooks: dict[str, Any] | None) -> None:
    """A plan's local paths, URL sources and hooks."""
    if folder_of(c, who) is None:
        return
    if hooks and any(hooks.get(stage) for stage in ("before", "after", "failure", "finally")):
        raise Problem(403, "hooks: hooks run commands on the server; only the server's "
                           "administrator may set them", field="hooks")
    for source in sources:
        if source.startswith("/"):
            check_path(c, who, source, "sources")
        elif "://" in source:
            check_url(c, who, source, "sources")
