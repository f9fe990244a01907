"""More destinations: Azure Blob (Azurite), WebDAV (rclone), GCS and the S3 provider presets.

Azure, WebDAV and GCS run against real servers on loopback (Azurite, rclone, and
gcp-storage-emulator for GCS's JSON API), through the store interface and through the
real CLI. The emulator checks no credentials, so GCS's refusals (access denied, no such
bucket) are checked against a tiny fake JSON API in a subprocess. Provider presets are
checked by the options they hand to OpenDAL.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import opendal.config
import pytest
from conftest import CLI, CLIResult, make_tree, snapshot_of_tree
from servers_cloud import (
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    WEBDAV_PASSWORD,
    WEBDAV_USER,
    AzuriteServer,
    GcsServer,
    WebDAVServer,
)

from multibackup.backends import (
    PROVIDERS,
    Location,
    open_store,
    operator_config,
    parse_location,
    provider_location,
)
from multibackup.backends.base import ObjectStore
from multibackup.errors import ObjectExists, ObjectNotFound, StoreError, UsageError

# A well-formed (base64) key that is not Azurite's: the server must refuse it.
WRONG_AZURE_KEY = base64.b64encode(b"wrong-key-that-must-not-leak-0042" * 2).decode()
WRONG_DAV_PASSWORD = "wrong-dav-pass-must-not-leak-8d3"
_CLEAR = ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN",
          "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ENDPOINT",
          "MULTIBACKUP_WEBDAV_USER", "MULTIBACKUP_WEBDAV_PASSWORD", "GOOGLE_APPLICATION_CREDENTIALS",
          "MULTIBACKUP_GCS_CREDENTIAL", "MULTIBACKUP_GCS_ENDPOINT", "AWS_ACCESS_KEY_ID",
          "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION", "AWS_DEFAULT_REGION",
          "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "MULTIBACKUP_S3_ADDRESSING",
          "MULTIBACKUP_R2_ACCOUNT_ID")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests set exactly the variables they mean; nothing leaks in from the caller's shell."""
    for name in _CLEAR:
        monkeypatch.delenv(name, raising=False)


def _env(monkeypatch: pytest.MonkeyPatch, values: dict[str, str]) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)


def one_error_line(r: CLIResult) -> str:
    assert r.code != 0, f"expected a failure\n{r.out}\n{r.err}"
    lines = r.err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{r.err}"
    assert lines[0].startswith("error: ") and "Traceback" not in r.err
    return lines[0]


def _restored(target: Path, src: Path) -> Path:
    return target / str(src).lstrip("/")


def _server(kind: str, request: pytest.FixtureRequest) -> AzuriteServer | WebDAVServer | GcsServer:
    return request.getfixturevalue({"azure": "azurite", "gcs": "gcs"}.get(kind, kind))


# ---- store level: Azure, WebDAV and GCS ---------------------------------------------------------


def _exercise(store: ObjectStore) -> None:
    """Every ObjectStore operation, checked against what was written."""
    big = os.urandom(300_000)
    store.put("data/ab/pack1", big)
    store.put("data/cd/pack2", b"second")
    store.put("index/one", b"")
    assert store.get("data/ab/pack1") == big
    assert store.get("data/ab/pack1", 1000, 5000) == big[1000:6000]
    assert store.get("data/ab/pack1", 299_990) == big[299_990:]
    assert store.get("index/one") == b""
    assert store.stat("data/ab/pack1").size == len(big)
    listed = {info.key: info.size for info in store.list()}
    assert listed == {"data/ab/pack1": len(big), "data/cd/pack2": 6, "index/one": 0}
    assert {info.key for info in store.list("data/")} == {"data/ab/pack1", "data/cd/pack2"}
    assert list(store.list("snapshots/")) == []
    store.put("data/cd/pack2", b"replaced")
    assert store.get("data/cd/pack2") == b"replaced"

    store.put_new("config", b"first")
    with pytest.raises(ObjectExists):
        store.put_new("config", b"second")
    assert store.get("config") == b"first"

    with pytest.raises(ObjectNotFound):
        store.get("data/zz/missing")
    with pytest.raises(ObjectNotFound):
        store.get("data/zz/missing", 10, 5)
    with pytest.raises(ObjectNotFound):
        store.stat("data/zz/missing")
    assert not store.exists("data/zz/missing") and store.exists("config")
    store.delete("data/zz/missing")  # idempotent
    store.delete("data/ab/pack1")
    assert not store.exists("data/ab/pack1")
    assert {info.key for info in store.list("data/")} == {"data/cd/pack2"}


def test_local_store_writes_and_reads_through_buffers(tmp_path: Path) -> None:
    """Packs are written from their own buffer and pack ranges read into a reused one
    (local disk only); the result is the same bytes as put and get."""
    store = open_store(parse_location(str(tmp_path / "repo")))
    assert getattr(store, "direct_buffers", False)
    data = bytearray(os.urandom(3 << 20))
    store.put_buffer("data/ab/pack", memoryview(data)[:2 << 20])  # type: ignore[attr-defined]
    assert store.get("data/ab/pack") == bytes(data[:2 << 20])
    assert list((tmp_path / "repo" / ".tmp").iterdir()) == []  # renamed into place
    buf = bytearray(1 << 20)
    got = store.get_view("data/ab/pack", 100, 1000, buf)  # type: ignore[attr-defined]
    assert bytes(got) == bytes(data[100:1100]) and got.obj is buf
    end = 2 << 20
    got = store.get_view("data/ab/pack", end - 10, 100, buf)  # type: ignore[attr-defined]
    assert bytes(got) == bytes(data[end - 10:end])  # cut at the end, as the file is
    with pytest.raises(ObjectNotFound):
        store.get_view("data/ab/missing", 0, 10, buf)  # type: ignore[attr-defined]


def test_azure_store_round_trip(azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, azurite.env())
    location = parse_location(azurite.location(prefix="deep/repo"))
    store = open_store(location, retries=0)
    assert store.create_only_atomic  # Azure has If-None-Match: put_new is race-safe
    _exercise(store)
    # the prefix really is a prefix: nothing outside it is visible, and it is used
    outer = open_store(parse_location(f"azure://{location.bucket}"), retries=0)
    assert {i.key for i in outer.list()} == {"deep/repo/data/cd/pack2", "deep/repo/index/one",
                                              "deep/repo/config"}


def test_webdav_store_round_trip(webdav: WebDAVServer, monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, webdav.env())
    store = open_store(parse_location(webdav.location("a/b/repo")), retries=0)
    # rclone's WebDAV has no conditional write: put_new checks first, then writes
    assert not store.create_only_atomic
    _exercise(store)
    on_disk = {str(p.relative_to(webdav.root)) for p in webdav.root.rglob("*") if p.is_file()}
    assert {"a/b/repo/config", "a/b/repo/data/cd/pack2", "a/b/repo/index/one"} <= on_disk
    assert (webdav.root / "a/b/repo/config").read_bytes() == b"first"


def test_gcs_store_round_trip(gcs: GcsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, gcs.env())
    location = parse_location(gcs.location(prefix="deep/repo"))
    store = open_store(location, retries=0)
    assert store.create_only_atomic  # ifGenerationMatch=0: put_new is race-safe
    _exercise(store)
    assert gcs.names(location.bucket) == ["deep/repo/config", "deep/repo/data/cd/pack2",
                                          "deep/repo/index/one"]
    assert gcs.read(location.bucket, "deep/repo/config") == b"first"


def test_webdav_user_in_url_and_connection_string_for_azure(
        webdav: WebDAVServer, azurite: AzuriteServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTIBACKUP_WEBDAV_PASSWORD", WEBDAV_PASSWORD)
    text = webdav.location("userurl").replace("://", f"://{WEBDAV_USER}@")
    location = parse_location(text)
    assert location.describe() == text
    store = open_store(location, retries=0)
    store.put("k", b"v")
    assert (webdav.root / "userurl" / "k").read_bytes() == b"v"

    container_location = azurite.location()
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
                       f"AccountKey={AZURITE_KEY};BlobEndpoint={azurite.endpoint};")
    store = open_store(parse_location(container_location), retries=0)
    store.put("k", b"from a connection string")
    assert store.get("k") == b"from a connection string"
    assert AZURITE_KEY not in repr(parse_location(container_location)) + store.description


# ---- full CLI round trips -----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["azure", "webdav", "gcs"])
def test_cli_round_trip(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    server = _server(kind, request)
    cli = CLI(server.location(), env=server.env())
    src = make_tree(tmp_path / "src")
    cli("init")
    summary = cli("backup", str(src), "--json").json()
    assert summary["files_new"] == 37 and summary["bytes_read"] > 3 * 1024 * 1024
    again = cli("backup", str(src), "--json").json()
    assert again["files_unchanged"] == 37 and again["data_blobs"] == 0
    (src / "page1.html").write_text("changed\n")
    cli("backup", str(src))
    assert len(cli("snapshots", "--json").json()) == 3
    # prune deletes and rewrites objects: the repository must stay whole
    cli("forget", "--keep-last", "1", "--prune")
    assert len(cli("snapshots", "--json").json()) == 1
    target = tmp_path / "restore"
    cli("restore", "latest", "--target", str(target))
    assert snapshot_of_tree(_restored(target, src)) == snapshot_of_tree(src)
    assert cli("check", "--read-data").code == 0
    # a second init on the same location must refuse (create-only config)
    r = cli("init", ok=False)
    assert r.code != 0 and "already initialised" in one_error_line(r)


# ---- wrong credentials, missing containers, outages ---------------------------------------


def test_azure_wrong_key_is_one_line_and_never_printed(azurite: AzuriteServer) -> None:
    location = azurite.location()
    CLI(location, env=azurite.env())("init")
    cli = CLI(location, env=dict(azurite.env(), AZURE_STORAGE_KEY=WRONG_AZURE_KEY))
    for args in (("snapshots",), ("init",)):
        r = cli(*args, ok=False)
        assert r.code not in (0, 2, 10)
        assert "access denied" in one_error_line(r)
        assert WRONG_AZURE_KEY not in r.out + r.err and AZURITE_KEY not in r.out + r.err
    # a key that is not even base64 is a usage error, and not echoed either
    bad = "not base64 at all !! secret-77"
    r = CLI(location, env=dict(azurite.env(), AZURE_STORAGE_KEY=bad))("snapshots", ok=False)
    assert r.code == 2 and "not valid base64" in one_error_line(r) and bad not in r.err
    assert len(CLI(location, env=azurite.env())("snapshots", "--json").json()) == 0


def test_webdav_wrong_password_is_one_line_and_never_printed(webdav: WebDAVServer) -> None:
    location = webdav.location()
    CLI(location, env=webdav.env())("init")
    cli = CLI(location, env=dict(webdav.env(), MULTIBACKUP_WEBDAV_PASSWORD=WRONG_DAV_PASSWORD))
    for args in (("snapshots",), ("init",)):
        r = cli(*args, ok=False)
        assert r.code not in (0, 2, 10)
        assert "access denied" in one_error_line(r)
        assert WRONG_DAV_PASSWORD not in r.out + r.err and WEBDAV_PASSWORD not in r.out + r.err
    assert CLI(location, env=webdav.env())("snapshots", "--json").json() == []


def test_azure_missing_container(azurite: AzuriteServer) -> None:
    cli = CLI("azure://no-such-container-3c9/repo", env=azurite.env())
    for args in (("snapshots",), ("init",)):
        r = cli(*args, ok=False)
        assert r.code != 0 and "container (or the storage account) does not exist" in one_error_line(r)


@pytest.mark.parametrize("kind", ["azure", "webdav", "gcs"])
def test_outage_then_recovery(kind: str, request: pytest.FixtureRequest) -> None:
    server = _server(kind, request)
    cli = CLI(server.location(), env=server.env())
    cli("init")
    server.stop()
    try:
        started = time.monotonic()
        r = cli("snapshots", ok=False, timeout=90)
        assert time.monotonic() - started < 60
        assert r.code not in (0, 2, 10)
        assert "cannot reach the server" in one_error_line(r)
    finally:
        server.start()
    assert cli("snapshots", "--json").json() == []


# ---- credentials from the config layer -----------------------------------------------------


def test_credentials_override_the_environment(azurite: AzuriteServer, webdav: WebDAVServer,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    # wrong secrets in the environment, right ones given explicitly: the explicit ones win
    _env(monkeypatch, dict(azurite.env(), AZURE_STORAGE_KEY=WRONG_AZURE_KEY,
                           MULTIBACKUP_WEBDAV_USER="nobody",
                           MULTIBACKUP_WEBDAV_PASSWORD=WRONG_DAV_PASSWORD))
    azure = parse_location(azurite.location())
    with pytest.raises(StoreError, match="access denied"):
        open_store(azure, retries=0).put("k", b"v")
    good = {"account_name": AZURITE_ACCOUNT, "account_key": AZURITE_KEY}
    store = open_store(azure, retries=0, credentials=good)
    store.put("k", b"v")
    assert store.get("k") == b"v"

    dav = parse_location(webdav.location())
    with pytest.raises(StoreError, match="access denied"):
        open_store(dav, retries=0).put("k", b"v")
    store = open_store(dav, retries=0,
                       credentials={"username": WEBDAV_USER, "password": WEBDAV_PASSWORD})
    store.put("k", b"v")
    assert store.get("k") == b"v"

    # and the other way round: right environment, wrong explicit credentials
    _env(monkeypatch, azurite.env())
    with pytest.raises(StoreError, match="access denied") as info:
        open_store(azure, retries=0, credentials=dict(good, account_key=WRONG_AZURE_KEY)).get("k")
    assert WRONG_AZURE_KEY not in str(info.value) and AZURITE_KEY not in str(info.value)


def test_credentials_are_validated_and_never_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, {"AWS_ACCESS_KEY_ID": "env-key-id", "AWS_SECRET_ACCESS_KEY": "env-secret"})
    location = parse_location("s3://bucket/prefix")
    _, options = operator_config(location)
    assert (options["access_key_id"], options["secret_access_key"]) == ("env-key-id", "env-secret")
    _, options = operator_config(location, {"access_key_id": "cfg-id",
                                            "secret_access_key": "cfg-secret",
                                            "session_token": "cfg-token"})
    assert (options["access_key_id"], options["secret_access_key"],
            options["session_token"]) == ("cfg-id", "cfg-secret", "cfg-token")
    # explicit empty credentials mean "anonymous", not "fall back to the environment"
    _, options = operator_config(location, {})
    assert "access_key_id" not in options and options["allow_anonymous"] == "true"

    with pytest.raises(UsageError, match="'account_key'") as info:
        open_store(location, credentials={"account_key": "hunter2-value"})
    assert "hunter2-value" not in str(info.value)
    with pytest.raises(UsageError, match="'password'"):
        open_store(parse_location("gs://b/p"), credentials={"password": "x"})
    with pytest.raises(UsageError, match="both the access key id and the secret"):
        operator_config(location, {"access_key_id": "only-the-id"})
    with pytest.raises(UsageError, match="unknown credential 'user'"):
        open_store(parse_location("memory://x"), credentials={"user": "u"})

    store = open_store(location, credentials={"access_key_id": "cfg-id",
                                              "secret_access_key": "cfg-secret"})
    shown = repr(location) + location.describe() + store.description
    assert "cfg-secret" not in shown and "env-secret" not in shown
    spoofed = Location("s3", "p", bucket="b", options={"region": "r", "secret_access_key": "zz9"})
    assert "zz9" not in repr(spoofed)


# ---- location syntax ----------------------------------------------------------------------


def test_location_forms_and_unknown_schemes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AZURE_STORAGE_ENDPOINT", "http://127.0.0.1:1/acct/")
    azure = parse_location("azure://box/a/b")
    assert (azure.scheme, azure.bucket, azure.path, azure.endpoint) == (
        "azblob", "box", "a/b", "http://127.0.0.1:1/acct")
    dav = parse_location("webdavs://alice@files.example.org/remote.php/dav/backup/")
    assert (dav.endpoint, dav.path, dav.options["username"]) == (
        "https://files.example.org", "remote.php/dav/backup", "alice")
    assert dav.describe() == "webdavs://alice@files.example.org/remote.php/dav/backup"
    sftp = parse_location("sftp://bob@host.example:2222/srv/repo")
    assert (sftp.scheme, sftp.endpoint, sftp.options["port"], sftp.options["username"],
            sftp.path) == ("sftp", "host.example", "2222", "bob", "srv/repo")
    assert parse_location("sftp://host.example/srv").options["port"] == "22"
    # the existing forms keep their meaning
    assert parse_location(str(tmp_path)).scheme == "fs"
    s3 = parse_location("s3:http://127.0.0.1:9000/bkt/pre")
    assert (s3.endpoint, s3.bucket, s3.path, s3.options["addressing"]) == (
        "http://127.0.0.1:9000", "bkt", "pre", "path")
    aws = parse_location("s3://bkt/pre")
    assert (aws.endpoint, aws.options["region"], aws.options["addressing"]) == (
        "", "us-east-1", "virtual")

    for text in ("ftp://user:hunter2@host/x", "dropbox://x", "webdav://u:hunter2@h/x"):
        with pytest.raises(UsageError) as info:
            parse_location(text)
        assert "hunter2" not in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(UsageError, match="unsupported repository location") as info:
        parse_location("dropbox://x")
    for form in ("azure://", "gs://", "webdav", "sftp://", "s3://", "oss"):
        assert form in str(info.value)
    r = CLI("ftp://user:hunter2@host/x")("snapshots", ok=False)
    assert r.code == 2 and "unsupported repository location" in one_error_line(r)
    assert "hunter2" not in r.err


# ---- S3 provider presets ------------------------------------------------------------------

_S3_OPTION_NAMES = opendal.config.S3Config.__required_keys__ | opendal.config.S3Config.__optional_keys__

PRESETS = [
    # provider, region given, endpoint expected, signing region, virtual-hosted?
    ("aws", "eu-west-1", "https://s3.eu-west-1.amazonaws.com", "eu-west-1", True),
    ("aws", "cn-north-1", "https://s3.cn-north-1.amazonaws.com.cn", "cn-north-1", True),
    ("oss", "cn-hangzhou", "https://oss-cn-hangzhou.aliyuncs.com", "cn-hangzhou", True),
    ("oss", "oss-cn-shanghai", "https://oss-cn-shanghai.aliyuncs.com", "cn-shanghai", True),
    ("cos", "ap-guangzhou", "https://cos.ap-guangzhou.myqcloud.com", "ap-guangzhou", True),
    ("qiniu", "cn-east-1", "https://s3.cn-east-1.qiniucs.com", "cn-east-1", True),
    ("obs", "cn-north-4", "https://obs.cn-north-4.myhuaweicloud.com", "cn-north-4", True),
    ("b2", "us-west-004", "https://s3.us-west-004.backblazeb2.com", "us-west-004", True),
    ("wasabi", "eu-central-1", "https://s3.eu-central-1.wasabisys.com", "eu-central-1", True),
    ("r2", None, "https://acc123.r2.cloudflarestorage.com", "auto", False),
]


@pytest.mark.parametrize(("provider", "region", "endpoint", "signing", "virtual"), PRESETS)
def test_provider_presets(provider: str, region: str | None, endpoint: str, signing: str,
                          virtual: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTIBACKUP_R2_ACCOUNT_ID", "acc123")
    location = parse_location(f"{provider}://my-bucket/backups/host1", s3_region=region)
    assert location.describe() == f"{provider}://my-bucket/backups/host1"
    assert location == provider_location(provider, "my-bucket", "backups/host1", region)
    scheme, options = operator_config(location)
    assert scheme == "s3"
    assert options["endpoint"] == endpoint and options["region"] == signing
    assert options["bucket"] == "my-bucket" and options["root"] == "/backups/host1"
    assert options["enable_virtual_host_style"] == ("true" if virtual else "false")
    assert set(options) <= _S3_OPTION_NAMES  # OpenDAL ignores misspelt options silently
    assert provider in PROVIDERS


def test_provider_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    for provider, example in (("oss", "cn-hangzhou"), ("cos", "ap-guangzhou"),
                              ("qiniu", "cn-east-1"), ("obs", "cn-north-4"),
                              ("b2", "us-west-004"), ("wasabi", "us-east-1"), ("aws", "eu-west-1")):
        with pytest.raises(UsageError) as info:
            parse_location(f"{provider}://bucket")
        assert provider in str(info.value) and example in str(info.value)
    monkeypatch.setenv("AWS_REGION", "ap-beijing")
    assert operator_config(parse_location("cos://b-1250000000"))[1]["endpoint"] == \
        "https://cos.ap-beijing.myqcloud.com"
    with pytest.raises(UsageError, match="r2 needs the Cloudflare account id"):
        parse_location("r2://bucket")
    r2 = provider_location("r2", "bucket", endpoint="https://other.r2.cloudflarestorage.com")
    assert r2.endpoint == "https://other.r2.cloudflarestorage.com"
    assert r2.options["region"] == "auto"
    with pytest.raises(UsageError, match="virtual-hosted"):
        parse_location("oss://bucket", s3_addressing="path")
    with pytest.raises(UsageError, match="minio needs an endpoint"):
        parse_location("minio://bucket")
    for generic in ("minio", "seaweedfs"):
        loc = parse_location(f"{generic}://bucket/p", s3_endpoint="http://127.0.0.1:9000")
        assert (loc.endpoint, loc.options["addressing"]) == ("http://127.0.0.1:9000", "path")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:8333")
    assert parse_location("minio://bucket").endpoint == "http://127.0.0.1:8333"
    # an explicit endpoint beats the pattern (internal endpoints, custom domains)
    oss = parse_location("oss://b", s3_endpoint="https://oss-cn-hangzhou-internal.aliyuncs.com")
    assert oss.endpoint == "https://oss-cn-hangzhou-internal.aliyuncs.com"
    assert oss.options["addressing"] == "virtual"
    # and the environment's generic endpoint does not redirect a named provider
    assert parse_location("wasabi://b").endpoint == "https://s3.ap-beijing.wasabisys.com"
    with pytest.raises(UsageError, match="unknown S3 provider"):
        provider_location("dropbox", "b")


# ---- GCS: configuration, and the refusals the emulator never gives --------------------------------------------------------------

_GCS_OPTION_NAMES = (opendal.config.GcsConfig.__required_keys__
                     | opendal.config.GcsConfig.__optional_keys__)
_SERVICE_ACCOUNT = {"type": "service_account", "project_id": "p", "private_key_id": "k",
                    "private_key": "-----BEGIN PRIVATE KEY-----\nsecret-pem\n-----END PRIVATE KEY-----\n",
                    "client_email": "backup@p.iam.gserviceaccount.com"}


def test_gcs_options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "sa.json"
    key_file.write_text(json.dumps(_SERVICE_ACCOUNT))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    monkeypatch.setenv("MULTIBACKUP_GCS_ENDPOINT", "http://127.0.0.1:4443/")
    location = parse_location("gs://my-bucket/hosts/a")
    assert location.describe() == "gs://my-bucket/hosts/a"
    scheme, options = operator_config(location)
    assert scheme == "gcs" and set(options) <= _GCS_OPTION_NAMES
    assert options == {"bucket": "my-bucket", "root": "/hosts/a", "credential_path": str(key_file),
                       "endpoint": "http://127.0.0.1:4443", "disable_config_load": "true",
                       "disable_vm_metadata": "true"}
    encoded = base64.b64encode(json.dumps(_SERVICE_ACCOUNT).encode()).decode()
    monkeypatch.setenv("MULTIBACKUP_GCS_CREDENTIAL", encoded)
    assert operator_config(location)[1]["credential"] == encoded
    # config credentials replace both variables
    _, options = operator_config(location, {"credential_path": str(key_file)})
    assert options["credential_path"] == str(key_file) and "credential" not in options
    _, options = operator_config(location, {})
    assert options["skip_signature"] == "true" and "credential" not in options
    assert "secret-pem" not in repr(location) + open_store(location).description


def test_gcs_bad_credentials_are_one_line(tmp_path: Path) -> None:
    not_json = tmp_path / "creds.json"
    not_json.write_text("this is not json secret-text-31")
    cases = [({"GOOGLE_APPLICATION_CREDENTIALS": str(tmp_path / "missing.json")},
              "cannot read the GCS credential file"),
             ({"GOOGLE_APPLICATION_CREDENTIALS": str(not_json)}, "not a Google credential"),
             ({"MULTIBACKUP_GCS_CREDENTIAL": "!!secret-text-31"}, "not base64-encoded")]
    for env, expected in cases:
        r = CLI("gs://bucket/repo", env=env)("snapshots", ok=False)
        line = one_error_line(r)
        assert r.code == 2 and expected in line and "gs://bucket/repo" in line
        assert "secret-text-31" not in r.err + r.out


def test_gcs_unreachable_endpoint(tmp_path: Path) -> None:
    env = {"MULTIBACKUP_GCS_ENDPOINT": f"http://127.0.0.1:{_closed_port()}"}
    started = time.monotonic()
    r = CLI("gs://bucket/repo", env=env)("snapshots", ok=False, timeout=90)
    assert time.monotonic() - started < 60
    assert r.code not in (0, 2, 10) and "cannot reach the server" in one_error_line(r)


_FAKE_GCS = r"""
import http.server, json, sys
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        sys.stdout.write(self.path + "\n"); sys.stdout.flush()
        if "/b/nobucket/" in self.path:
            code, body = 404, {"error": {"code": 404, "message": "The specified bucket does not exist."}}
        elif "/b/locked/" in self.path:
            code, body = 403, {"error": {"code": 403, "message": "Anonymous caller does not have access."}}
        else:
            code, body = 404, {"error": {"code": 404, "message": "No such object"}}
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


def test_gcs_requests_and_errors_against_a_fake_api(monkeypatch: pytest.MonkeyPatch) -> None:
    """The JSON API paths OpenDAL uses, and how its errors come out.

    The fake runs in its own process: OpenDAL's list holds the GIL while it waits for the
    first page, so a server thread in this process would never get to answer.
    """
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-c", _FAKE_GCS, str(port)], text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port)
        monkeypatch.setenv("MULTIBACKUP_GCS_ENDPOINT", f"http://127.0.0.1:{port}")
        store = open_store(parse_location("gs://bkt/hosts/a"), retries=0)
        with pytest.raises(ObjectNotFound):
            store.stat("config")
        assert not store.exists("keys/abc")
        with pytest.raises(StoreError, match="access denied") as info:
            store = open_store(parse_location("gs://locked/x"), retries=0)
            store.get("config")
        assert "\n" not in str(info.value)
        with pytest.raises(StoreError, match="bucket does not exist"):
            list(open_store(parse_location("gs://nobucket/x"), retries=0).list("snapshots/"))
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    paths = out.split()
    assert "/storage/v1/b/bkt/o/hosts%2Fa%2Fconfig" in paths
    assert "/storage/v1/b/bkt/o/hosts%2Fa%2Fkeys%2Fabc" in paths
    assert any(p.startswith("/storage/v1/b/nobucket/o?") and "prefix=x%2Fsnapshots%2F" in p
               for p in paths)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _closed_port() -> int:
    """A privileged port nothing listens on (never an ephemeral one: no TCP self-connect)."""
    for port in (1, 3, 5, 7, 9):
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) != 0:
                return port
    raise RuntimeError("no closed low port")


def _wait_listening(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")
