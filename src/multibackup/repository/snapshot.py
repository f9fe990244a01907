"""Snapshots: the root tree of one backup plus who, when, what and how it went."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from multibackup.errors import IntegrityError


@dataclass
class Snapshot:
    time: datetime
    tree: bytes
    paths: list[str]
    hostname: str
    username: str = ""
    tags: list[str] = field(default_factory=list)
    parent: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    program_version: str = ""
    id: str = ""  # storage id, filled in when loaded or saved

    @property
    def short_id(self) -> str:
        return self.id[:8]

    def to_json(self) -> dict[str, Any]:
        return {"time": self.time.isoformat(), "tree": self.tree.hex(), "paths": self.paths,
                "hostname": self.hostname, "username": self.username, "tags": self.tags,
                "parent": self.parent, "summary": self.summary,
                "program_version": self.program_version}

    def encode(self) -> bytes:
        return json.dumps(self.to_json(), sort_keys=True,
                          separators=(",", ":")).encode("utf-8", "surrogateescape")

    @classmethod
    def decode(cls, data: bytes, snap_id: str) -> Snapshot:
        try:
            d = json.loads(data.decode("utf-8", "surrogateescape"))
            return cls(time=datetime.fromisoformat(d["time"]), tree=bytes.fromhex(d["tree"]),
                       paths=list(d["paths"]), hostname=d["hostname"],
                       username=d.get("username", ""), tags=list(d.get("tags", [])),
                       parent=d.get("parent"), summary=d.get("summary", {}),
                       program_version=d.get("program_version", ""), id=snap_id)
        except (ValueError, KeyError, TypeError) as exc:
            raise IntegrityError(f"snapshot {snap_id[:8]} is malformed: {exc}") from None
