#!/usr/bin/env bash
# Installs multibackup into ./.venv and runs the self-contained demo: no server needed.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
exec .venv/bin/multibackup demo "$@"
