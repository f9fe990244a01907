"""Turn a repository location string into an ObjectStore.

Accepted forms (restic users will recognise most):

- ``/srv/backup``, ``./repo``, ``local:/srv/backup``, ``file:///srv/backup`` - local disk
- ``s3://bucket/prefix`` - S3-compatible; endpoint from ``--s3-endpoint`` or ``AWS_ENDPOINT_URL``
- ``s3:https://host:port/bucket/prefix`` - S3 with the endpoint in the location
- ``<provider>://bucket/prefix`` - a named S3-compatible provider (``oss``, ``cos``, ``r2``...,
  see :mod:`multibackup.backends.providers`); region from ``--s3-region`` or ``AWS_REGION``
- ``azure://container/prefix`` - Azure Blob Storage
- ``gs://bucket/prefix`` - Google Cloud Storage
- ``webdav://[user@]host[:port]/path``, ``webdavs://...`` - WebDAV over http / https
- ``sftp://[user@]host[:port]/path`` - SFTP (absolute path on the server)
- ``memory://name`` - in-process memory (tests)

Credentials are never part of the location string or of :class:`Location`: they come from
environment variables (or from the config file through ``open_store(credentials=...)``) at
the moment the store is opened, so they never reach the process list, a repr or a log.
"""

from __future__ import annotations

import base64
import binascii
import getpass
import json
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import SplitResult, unquote, urlsplit

from multibackup.backends.base import ObjectStore
from multibackup.backends.opendal_store import OpenDALStore
from multibackup.errors import UsageError

SUPPORTED_FORMS = ("PATH, local:PATH, file://PATH, s3://bucket/prefix, "
                   "s3:https://host/bucket/prefix, PROVIDER://bucket/prefix (aws, oss, cos, qiniu, "
                   "obs, b2, wasabi, r2, minio, seaweedfs), azure://container/prefix, "
                   "gs://bucket/prefix, webdav[s]://[user@]host[:port]/path, "
                   "sftp://[user@]host[:port]/path, memory://name")

#: credential keys ``open_store`` accepts, per store kind
CREDENTIAL_KEYS: dict[str, frozenset[str]] = {
    "s3": frozenset({"access_key_id", "secret_access_key", "session_token"}),
    "azblob": frozenset({"account_name", "account_key", "sas_token"}),
    "gcs": frozenset({"credential_path", "credential"}),
    "webdav": frozenset({"username", "password"}),
    "sftp": frozenset({"username", "password", "key_file", "key_passphrase", "known_hosts",
                       "host_key_policy"}),
    "fs": frozenset(),
    "memory": frozenset(),
}

_SECRET_WORDS = ("key", "secret", "token", "password", "credential", "passphrase")


@dataclass(frozen=True)
class Location:
    """A parsed repository location; ``describe()`` is safe to print.

    It never holds a credential (only names: an account, a user), so it can be logged.
    """

    scheme: str  # "fs", "memory", "s3", "azblob", "gcs", "webdav" or "sftp"
    path: str = ""  # fs root, memory name, or the prefix/root below bucket or server
    bucket: str = ""  # bucket or container
    endpoint: str = ""  # service URL (s3, azblob, gcs, webdav) or host name (sftp)
    options: dict[str, str] = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        """The location as the user would write it (without any secret)."""
        if self.scheme == "fs":
            return self.path
        if self.scheme == "memory":
            return f"memory://{self.path}"
        prefix = f"/{self.path}" if self.path else ""
        if self.scheme == "s3":
            return f"{self.options.get('provider') or 's3'}://{self.bucket}{prefix}"
        if self.scheme == "azblob":
            return f"azure://{self.bucket}{prefix}"
        if self.scheme == "gcs":
            return f"gs://{self.bucket}{prefix}"
        user = self.options.get("username")
        user = f"{user}@" if user else ""
        if self.scheme == "webdav":
            parts = urlsplit(self.endpoint)
            kind = "webdavs" if parts.scheme == "https" else "webdav"
            return f"{kind}://{user}{parts.netloc}{prefix}"
        port = self.options.get("port", "22")
        host = f"[{self.endpoint}]" if ":" in self.endpoint else self.endpoint
        return f"sftp://{user}{host}{'' if port == '22' else ':' + port}{prefix}"

    def __repr__(self) -> str:
        # Options hold no secrets by construction; filter anyway in case a caller adds one.
        shown = {k: v for k, v in self.options.items()
                 if not any(word in k.lower() for word in _SECRET_WORDS)}
        return (f"Location({self.describe()!r}, scheme={self.scheme!r}, "
                f"endpoint={self.endpoint!r}, options={shown!r})")


def _redacted(text: str) -> str:
    """The location text with any password in it replaced, for error messages."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        return text
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:***@{host}" if ":" in userinfo else f"{user}@{host}"
    return f"{scheme}://{netloc}{slash}{tail}"


def _split(text: str) -> SplitResult:
    """urlsplit that refuses passwords in the URL and bad ports, one line, nothing echoed."""
    parts = urlsplit(text)
    if parts.password is not None:
        raise UsageError(f"invalid location {_redacted(text)!r}: never put a password in the "
                         "location, use the environment or the config file")
    try:
        parts.port  # noqa: B018 - validates the port
    except ValueError:
        raise UsageError(f"invalid location {_redacted(text)!r}: bad port number") from None
    if parts.query or parts.fragment:
        raise UsageError(f"invalid location {_redacted(text)!r}: unexpected '?' or '#'")
    return parts


def parse_location(text: str, *, s3_endpoint: str | None = None, s3_region: str | None = None,
                   s3_addressing: str | None = None, what: str = "repository",
                   other_forms: str = "") -> Location:
    """Parse a location string; raises UsageError for anything unrecognised, naming the
    location ``what`` it was meant to be and the forms it could take (``other_forms``
    are those the caller handles itself)."""
    from multibackup.backends.providers import PROVIDERS, provider_location

    if not text:
        raise UsageError("no repository given: use -r/--repo or MULTIBACKUP_REPOSITORY")
    if text.startswith("memory://"):
        return Location("memory", text[len("memory://"):] or "default")
    if text.startswith("local:"):
        return Location("fs", os.path.abspath(text[len("local:"):]))
    if text.startswith("file://"):
        return Location("fs", os.path.abspath(urlsplit(text).path))
    region = s3_region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if text.startswith("s3:") and not text.startswith("s3://"):
        parts = _split(text[3:])
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(f"invalid S3 location {_redacted(text)!r}: "
                             "expected s3:https://host/bucket/prefix")
        bucket, _, prefix = parts.path.lstrip("/").partition("/")
        if not bucket:
            raise UsageError(f"invalid S3 location {_redacted(text)!r}: no bucket")
        return provider_location("s3", bucket, prefix, region, f"{parts.scheme}://{parts.netloc}",
                                 addressing=s3_addressing or "path")
    scheme, sep, _ = text.partition("://")
    if not sep:
        return Location("fs", os.path.abspath(text))
    scheme = scheme.lower()
    if scheme in PROVIDERS:
        parts = _split(text)
        generic = scheme in ("s3", "minio", "seaweedfs")
        endpoint = s3_endpoint
        if generic:
            endpoint = (endpoint or os.environ.get("AWS_ENDPOINT_URL_S3")
                        or os.environ.get("AWS_ENDPOINT_URL"))
        addressing = s3_addressing or (os.environ.get("MULTIBACKUP_S3_ADDRESSING") if generic
                                       else None)
        if not parts.netloc or "@" in parts.netloc:
            raise UsageError(f"invalid {scheme} location {_redacted(text)!r}: "
                             f"expected {scheme}://bucket/prefix")
        return provider_location(scheme, parts.netloc, parts.path, region, endpoint,
                                 addressing=addressing)
    if scheme in ("azure", "azblob"):
        parts = _split(text)
        if not parts.netloc or "@" in parts.netloc:
            raise UsageError(f"invalid Azure location {text!r}: expected azure://container/prefix")
        return Location("azblob", unquote(parts.path).strip("/"), bucket=parts.netloc,
                        endpoint=os.environ.get("AZURE_STORAGE_ENDPOINT", "").rstrip("/"))
    if scheme in ("gs", "gcs"):
        parts = _split(text)
        if not parts.netloc or "@" in parts.netloc:
            raise UsageError(f"invalid GCS location {text!r}: expected gs://bucket/prefix")
        return Location("gcs", unquote(parts.path).strip("/"), bucket=parts.netloc,
                        endpoint=os.environ.get("MULTIBACKUP_GCS_ENDPOINT", "").rstrip("/"))
    if scheme in ("webdav", "webdavs", "sftp"):
        parts = _split(text)
        if not parts.hostname:
            raise UsageError(f"invalid location {_redacted(text)!r}: no host "
                             f"(expected {scheme}://[user@]host[:port]/path)")
        options = {"username": unquote(parts.username)} if parts.username else {}
        path = unquote(parts.path).strip("/")
        host = parts.netloc.rpartition("@")[2]
        if scheme == "sftp":
            options["port"] = str(parts.port or 22)
            return Location("sftp", path, endpoint=parts.hostname, options=options)
        http = "https" if scheme == "webdavs" else "http"
        return Location("webdav", path, endpoint=f"{http}://{host}", options=options)
    raise UsageError(f"unsupported {what} location {_redacted(text)!r}: "
                     f"use one of {SUPPORTED_FORMS}{other_forms}")


_memory_stores: dict[str, OpenDALStore] = {}
_memory_lock = threading.Lock()


def open_store(location: Location, retries: int = 4,
               credentials: Mapping[str, str] | None = None,
               read_only: bool = False) -> ObjectStore:
    """Open the store a location names (no I/O happens yet).

    ``credentials`` (from the config file) replace the credential environment variables
    of that kind of store entirely, so that two destinations never mix one's key with
    another's token. Keys per kind are in :data:`CREDENTIAL_KEYS`. ``read_only``: a
    store only read from (a migration's source), which on local disk then needs no
    temporary directory of its own, and so no write access.
    """
    if location.scheme == "memory":
        _check_credentials(location, credentials)
        with _memory_lock:
            store = _memory_stores.get(location.path)
            if store is None:
                store = OpenDALStore("memory", location.describe(), retries=0)
                _memory_stores[location.path] = store
            return store
    if location.scheme == "sftp":
        return _open_sftp(location, credentials)
    scheme, options = operator_config(location, credentials)
    if read_only and scheme == "fs":
        # no temporary directory for writes: a read-only directory can be a source
        options.pop("atomic_write_dir", None)
    if scheme == "webdav":
        from multibackup.backends.webdav_store import WebDAVStore

        return WebDAVStore(location.describe(), retries=retries, **options)
    return OpenDALStore(scheme, location.describe(), retries=retries, **options)


def operator_config(location: Location,
                    credentials: Mapping[str, str] | None = None) -> tuple[str, dict[str, str]]:
    """The OpenDAL scheme and options ``open_store`` builds (the options contain secrets).

    Separate from ``open_store`` so that each destination's configuration can be checked
    without a server; never log the returned options.
    """
    creds = _check_credentials(location, credentials)
    if location.scheme == "fs":
        root = location.path
        return "fs", {"root": root, "atomic_write_dir": os.path.join(root, ".tmp")}
    if location.scheme == "s3":
        return "s3", _s3_options(location, creds)
    if location.scheme == "azblob":
        return "azblob", _azure_options(location, creds)
    if location.scheme == "gcs":
        return "gcs", _gcs_options(location, creds)
    if location.scheme == "webdav":
        return "webdav", _webdav_options(location, creds)
    raise UsageError(f"{location.describe()}: no OpenDAL service for {location.scheme!r}")


def _check_credentials(location: Location,
                       credentials: Mapping[str, str] | None) -> dict[str, str] | None:
    """Validated credentials with empty values dropped; None means "use the environment"."""
    if credentials is None:
        return None
    allowed = CREDENTIAL_KEYS.get(location.scheme, frozenset())
    for key, value in credentials.items():
        if key not in allowed:
            accepted = ", ".join(sorted(allowed)) or "none"
            raise UsageError(f"{location.describe()}: unknown credential {key!r} "
                             f"(accepted: {accepted})")
        if not isinstance(value, str):
            raise UsageError(f"{location.describe()}: credential {key!r} must be a string")
    return {k: v for k, v in credentials.items() if v}


def _env(name: str) -> str:
    return os.environ.get(name, "")


def _s3_options(location: Location, creds: dict[str, str] | None) -> dict[str, str]:
    options = {
        "bucket": location.bucket,
        "root": "/" + location.path,
        "region": location.options["region"],
        "disable_config_load": "true",
        "disable_ec2_metadata": "true",
        "enable_virtual_host_style": "true" if location.options["addressing"] == "virtual"
        else "false",
    }
    if location.endpoint:
        options["endpoint"] = location.endpoint
    if creds is None:
        creds = {"access_key_id": _env("AWS_ACCESS_KEY_ID"),
                 "secret_access_key": _env("AWS_SECRET_ACCESS_KEY"),
                 "session_token": _env("AWS_SESSION_TOKEN")}
    key_id, secret = creds.get("access_key_id"), creds.get("secret_access_key")
    if key_id and secret:
        options["access_key_id"] = key_id
        options["secret_access_key"] = secret
        if creds.get("session_token"):
            options["session_token"] = creds["session_token"]
    elif key_id or secret:
        raise UsageError(f"{location.describe()}: incomplete credentials: both the access key "
                         "id and the secret access key are needed")
    else:
        options["allow_anonymous"] = "true"
    return options


def _parse_connection_string(text: str) -> dict[str, str]:
    """``Key=Value;...`` of an Azure connection string (values may contain ``=``)."""
    fields: dict[str, str] = {}
    for part in text.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep and name:
            fields[name.strip()] = value.strip()
    return fields


def _azure_options(location: Location, creds: dict[str, str] | None) -> dict[str, str]:
    endpoint = location.endpoint
    if creds is None:
        conn = _parse_connection_string(_env("AZURE_STORAGE_CONNECTION_STRING"))
        creds = {"account_name": _env("AZURE_STORAGE_ACCOUNT") or conn.get("AccountName", ""),
                 "account_key": _env("AZURE_STORAGE_KEY") or conn.get("AccountKey", ""),
                 "sas_token": _env("AZURE_STORAGE_SAS_TOKEN")
                 or conn.get("SharedAccessSignature", "")}
        if not endpoint and conn.get("BlobEndpoint"):
            endpoint = conn["BlobEndpoint"]
        elif not endpoint and conn.get("EndpointSuffix") and creds["account_name"]:
            protocol = conn.get("DefaultEndpointsProtocol", "https")
            endpoint = f"{protocol}://{creds['account_name']}.blob.{conn['EndpointSuffix']}"
    account = creds.get("account_name", "")
    if not endpoint:
        if not account:
            raise UsageError(f"{location.describe()}: no storage account: set "
                             "AZURE_STORAGE_ACCOUNT or AZURE_STORAGE_CONNECTION_STRING")
        endpoint = f"https://{account}.blob.core.windows.net"
    options = {"container": location.bucket, "root": "/" + location.path,
               "endpoint": endpoint.rstrip("/")}
    if account:
        options["account_name"] = account
    if creds.get("account_key"):
        if not account:
            raise UsageError(f"{location.describe()}: an account key needs the account name "
                             "(AZURE_STORAGE_ACCOUNT)")
        try:
            base64.b64decode(creds["account_key"], validate=True)
        except (binascii.Error, ValueError):
            raise UsageError(f"{location.describe()}: the storage account key is not valid "
                             "base64") from None
        options["account_key"] = creds["account_key"]
    elif creds.get("sas_token"):
        options["sas_token"] = creds["sas_token"].lstrip("?")
    else:
        raise UsageError(f"{location.describe()}: no Azure credentials: set AZURE_STORAGE_KEY, "
                         "AZURE_STORAGE_SAS_TOKEN or AZURE_STORAGE_CONNECTION_STRING")
    return options


def _gcs_options(location: Location, creds: dict[str, str] | None) -> dict[str, str]:
    if creds is None:
        creds = {"credential": _env("MULTIBACKUP_GCS_CREDENTIAL"),
                 "credential_path": _env("GOOGLE_APPLICATION_CREDENTIALS")}
        names = {"credential": "MULTIBACKUP_GCS_CREDENTIAL",
                 "credential_path": "GOOGLE_APPLICATION_CREDENTIALS"}
    else:
        names = {"credential": "credential 'credential'",
                 "credential_path": "credential 'credential_path'"}
    # OpenDAL would otherwise look for credentials itself (environment, gcloud files, the
    # GCE metadata server) and could pick up another account's without saying so.
    options = {"bucket": location.bucket, "root": "/" + location.path,
               "disable_config_load": "true", "disable_vm_metadata": "true"}
    if location.endpoint:
        options["endpoint"] = location.endpoint
    where = location.describe()
    if creds.get("credential"):
        try:
            decoded = base64.b64decode(creds["credential"], validate=True)
            _check_gcs_json(decoded.decode())
        except (binascii.Error, ValueError, UnicodeDecodeError):
            raise UsageError(f"{where}: {names['credential']} is not base64-encoded "
                             "service account JSON") from None
        options["credential"] = creds["credential"]
    elif creds.get("credential_path"):
        path = creds["credential_path"]
        try:
            with open(path, encoding="utf-8") as fh:
                _check_gcs_json(fh.read())
        except OSError as exc:
            raise UsageError(f"{where}: cannot read the GCS credential file {path} "
                             f"({names['credential_path']}): {exc.strerror}") from None
        except (ValueError, UnicodeDecodeError):
            raise UsageError(f"{where}: the GCS credential file {path} "
                             f"({names['credential_path']}) is not a Google credential JSON "
                             "file") from None
        options["credential_path"] = path
    else:
        options["skip_signature"] = "true"  # public buckets; writes will be refused
    return options


def _check_gcs_json(text: str) -> None:
    doc = json.loads(text)
    if not isinstance(doc, dict) or not isinstance(doc.get("type"), str):
        raise ValueError("not a credential document")


def _webdav_options(location: Location, creds: dict[str, str] | None) -> dict[str, str]:
    if creds is None:
        creds = {"username": _env("MULTIBACKUP_WEBDAV_USER"),
                 "password": _env("MULTIBACKUP_WEBDAV_PASSWORD")}
    username = creds.get("username") or location.options.get("username", "")
    options = {"endpoint": location.endpoint, "root": "/" + location.path}
    if username:
        options["username"] = username
    if creds.get("password"):
        if not username:
            raise UsageError(f"{location.describe()}: a WebDAV password needs a user name "
                             "(webdav://user@host/... or MULTIBACKUP_WEBDAV_USER)")
        options["password"] = creds["password"]
    return options


def _login_name() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        raise UsageError("no SFTP user name: use sftp://user@host/path") from None


def _open_sftp(location: Location, credentials: Mapping[str, str] | None) -> ObjectStore:
    from multibackup.backends.sftp_store import SFTPStore

    creds = _check_credentials(location, credentials)
    if creds is None:
        creds = {"password": _env("MULTIBACKUP_SFTP_PASSWORD"),
                 "key_file": _env("MULTIBACKUP_SFTP_KEY_FILE"),
                 "key_passphrase": _env("MULTIBACKUP_SFTP_KEY_PASSPHRASE"),
                 "known_hosts": _env("MULTIBACKUP_SFTP_KNOWN_HOSTS"),
                 "host_key_policy": _env("MULTIBACKUP_SFTP_HOST_KEY_POLICY")}
    username = creds.get("username") or location.options.get("username") or _login_name()
    extra = {"key_passphrase": creds["key_passphrase"]} if creds.get("key_passphrase") else {}
    return SFTPStore(location.endpoint, int(location.options.get("port", "22")), username,
                     "/" + location.path, password=creds.get("password") or None,
                     key_file=creds.get("key_file") or None,
                     known_hosts=creds.get("known_hosts") or None,
                     host_key_policy=creds.get("host_key_policy") or "strict",
                     description=location.describe(), **extra)
