"""Plan hooks: commands run around a backup (maintenance mode on, off; notify someone).

Each command runs without a terminal, with stdin closed, stdout and stderr captured into
the run record (the last ``OUTPUT_LIMIT`` bytes), and a timeout after which its whole
process group is killed. It gets ``MULTIBACKUP_PLAN``, ``MULTIBACKUP_STAGE`` and, after
the backup, ``MULTIBACKUP_STATUS`` (ok, partial or failed) in its environment.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from typing import Any

OUTPUT_LIMIT = 64 * 1024


def run_hook(argv: Sequence[str], *, stage: str, plan: str, timeout: int,
             env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Run one hook command; returns what the run record keeps of it. Never raises."""
    started = time.monotonic()
    child_env = dict(os.environ)
    child_env.update({"MULTIBACKUP_PLAN": plan, "MULTIBACKUP_STAGE": stage, **(env or {})})
    result: dict[str, Any] = {"stage": stage, "command": " ".join(argv), "exit_code": None,
                              "output": "", "error": None}
    with tempfile.TemporaryFile() as out:
        try:
            proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=child_env,
                                    start_new_session=True)
        except OSError as exc:
            result["error"] = f"cannot run {argv[0]}: {exc.strerror or exc}"
            return result
        try:
            result["exit_code"] = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            result["error"] = f"timed out after {timeout} s and was killed"
        size = out.tell()
        out.seek(max(0, size - OUTPUT_LIMIT))
        result["output"] = out.read().decode("utf-8", "replace")
    if result["error"] is None and result["exit_code"] != 0:
        result["error"] = f"exited with status {result['exit_code']}"
    result["duration"] = round(time.monotonic() - started, 3)
    return result


def run_stage(commands: Sequence[Sequence[str]], *, stage: str, plan: str, timeout: int,
              log: list[dict[str, Any]], env: Mapping[str, str] | None = None,
              stop_on_error: bool = True) -> str | None:
    """Run a stage's commands in order; the first failure's message, or None if all ran."""
    first: str | None = None
    for argv in commands:
        res = run_hook(argv, stage=stage, plan=plan, timeout=timeout, env=env)
        log.append(res)
        if res["error"] is not None:
            first = first or f"{stage} hook {res['command']!r} {res['error']}"
            if stop_on_error:
                break
    return first
