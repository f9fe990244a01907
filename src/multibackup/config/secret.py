"""References to secrets: where a password or cloud key is read from, never the value.

The config file names an environment variable, a file or a command; the value is read only
when a store is opened or a repository unlocked, so a config can be shared, printed and
checked without exposing anything, and a rotated key is picked up by the next run.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass

from multibackup.errors import UsageError

#: How long a password or credential command may take (a gpg/pass/vault call, perhaps
#: waiting for an agent) before the run is given up.
COMMAND_TIMEOUT = 60.0


@dataclass(frozen=True)
class SecretRef:
    """Where one secret comes from: ``kind`` is ``env``, ``file``, ``command`` or ``value``.

    ``value`` is only used for non-secret settings written directly in the file (an access
    key id, a user name); its text is hidden from ``repr`` all the same.
    """

    kind: str
    source: str | tuple[str, ...]

    def __repr__(self) -> str:
        if self.kind == "value":
            return "SecretRef(value=<hidden>)"
        return f"SecretRef({self.kind}={self.source!r})"

    def describe(self) -> str:
        """Safe to print: the variable, file or program, never what it holds."""
        if self.kind == "env":
            return f"environment variable {self.source}"
        if self.kind == "file":
            return f"file {self.source}"
        if self.kind == "command":
            return f"command {self.source[0]!r}"
        return "value in the config file"

    def resolve(self, what: str) -> str:
        """Read the secret now; ``what`` prefixes errors (e.g. "destination 'aws': secret_access_key")."""
        if self.kind == "value":
            return str(self.source)
        if self.kind == "env":
            value = os.environ.get(str(self.source), "")
            if not value:
                raise UsageError(f"{what}: environment variable {self.source} is not set")
            return value
        if self.kind == "file":
            path = str(self.source)
            try:
                with open(path, encoding="utf-8") as f:
                    value = f.read().rstrip("\r\n")
            except OSError as exc:
                raise UsageError(f"{what}: cannot read {path}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise UsageError(f"{what}: {path} is not UTF-8 text") from None
            if not value:
                raise UsageError(f"{what}: {path} is empty")
            return value
        return _run(tuple(self.source), what)


def _run(argv: tuple[str, ...], what: str) -> str:
    """First line of a command's output; its stderr goes to ours so its prompts still show."""
    program = argv[0]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              timeout=COMMAND_TIMEOUT, check=False)
    except FileNotFoundError:
        raise UsageError(f"{what}: command {program!r} not found") from None
    except PermissionError:
        raise UsageError(f"{what}: command {program!r} is not executable") from None
    except subprocess.TimeoutExpired:
        raise UsageError(f"{what}: command {program!r} did not finish within "
                         f"{COMMAND_TIMEOUT:.0f} s") from None
    if done.returncode != 0:
        raise UsageError(f"{what}: command {program!r} exited with status {done.returncode}")
    lines = done.stdout.decode("utf-8", "replace").splitlines()
    value = lines[0].rstrip("\r") if lines else ""
    if not value:
        raise UsageError(f"{what}: command {program!r} printed nothing")
    return value


class ResolvedCredentials(dict[str, str]):
    """Credential values for ``open_store``; ``repr`` shows only which keys are present."""

    def __repr__(self) -> str:
        return f"ResolvedCredentials({', '.join(sorted(self))})"

    __str__ = __repr__
