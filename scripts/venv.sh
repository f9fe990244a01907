# Sourced by the other scripts: creates ./.venv if needed and installs the locked
# dependencies (plus the requirements file named by $EXTRA_REQUIREMENTS, if any) and
# multibackup itself (editable). Needs only python3 with venv.
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.lock \
  ${EXTRA_REQUIREMENTS:+-r "$EXTRA_REQUIREMENTS"}
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
