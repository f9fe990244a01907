#!/usr/bin/env bash
# The main job on embedded defaults: installs multibackup into ./.venv and starts the server
# (REST API, web dashboard, scheduler and a worker) on http://127.0.0.1:8080 with a SQLite
# database in ~/.local/state/multibackup/server. The first start creates an administrator
# and prints the password once (or takes it from MULTIBACKUP_ADMIN_PASSWORD).
# Options go to `multibackup server` (see --help), e.g. --port 9000 or --state-dir DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
exec .venv/bin/multibackup server "$@"
