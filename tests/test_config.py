"""The config file: what a valid one loads into, and the exact one-line error for each mistake."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import pytest

from multibackup.backends import location as locations
from multibackup.config import (
    Config,
    ResolvedCredentials,
    SecretRef,
    describe_plans,
    find_config,
    load_config,
    loader,
    parse_schedule,
)
from multibackup.config.locator import KeyLocator
from multibackup.config.schedule import ScheduleError
from multibackup.engine.forget import Policy
from multibackup.errors import UsageError

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "multibackup.toml"

FULL = """\
[defaults]
password_file = "/etc/multibackup/password"
cache_dir = "/var/cache/multibackup"
host = "web1"

[destinations.local]
location = "/mnt/backup/site"

[destinations.aws]
location = "s3://my-bucket/site"
region = "eu-west-1"
access_key_id = { env = "AWS_KEY_PROD" }
secret_access_key = { env = "AWS_SECRET_PROD" }

[destinations.ali]
provider = "oss"
bucket = "site-backup"
prefix = "prod"
region = "cn-hangzhou"
access_key_id = { env = "ALI_KEY" }
secret_access_key = { file = "/etc/multibackup/ali-secret" }

[destinations.box]
location = "sftp://backup@box.example.com:2222/srv/backups/site"
key_file = "/root/.ssh/id_ed25519"
known_hosts = "/root/.ssh/known_hosts"

[plans.website]
sources = ["/var/www", "/etc/nginx"]
destinations = ["local", "aws", "ali"]
exclude = ["*.tmp", "cache/"]
tags = ["web"]
compression = 3
schedule = "daily 02:30"
[plans.website.retention]
keep_daily = 7
keep_weekly = 4
[plans.website.retention_per_destination.ali]
keep_monthly = 12

[plans.mail]
sources = ["/var/mail"]
destinations = ["box"]
host = "mail1"
schedule = "*/15 * * * *"
password_env = "MAIL_BACKUP_PASSWORD"
"""


def write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> str:
    """Write config.toml in a fresh working directory; errors then start 'config.toml:'."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.toml").write_text(textwrap.dedent(text), encoding="utf-8")
    return "config.toml"


def error_of(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str) -> str:
    with pytest.raises(UsageError) as info:
        load_config(write(tmp_path, monkeypatch, text))
    message = str(info.value)
    assert "\n" not in message
    assert info.value.exit_code == 2
    return message


@pytest.fixture
def full(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    return load_config(write(tmp_path, monkeypatch, FULL))


# ---- a valid file -------------------------------------------------------------------------


def test_destinations_load_into_locations_and_references(full: Config) -> None:
    assert list(full.destinations) == ["local", "aws", "ali", "box"]
    local = full.destinations["local"].location
    assert (local.scheme, local.path) == ("fs", "/mnt/backup/site")

    aws = full.destination("aws")
    assert (aws.location.scheme, aws.location.bucket, aws.location.path) == ("s3", "my-bucket", "site")
    assert aws.location.options["region"] == "eu-west-1"
    assert aws.credentials == {"access_key_id": SecretRef("env", "AWS_KEY_PROD"),
                               "secret_access_key": SecretRef("env", "AWS_SECRET_PROD")}

    ali = full.destinations["ali"]
    assert ali.provider == "oss"
    assert ali.location.endpoint == "https://oss-cn-hangzhou.aliyuncs.com"
    assert (ali.location.bucket, ali.location.path) == ("site-backup", "prod")
    assert ali.credentials["secret_access_key"] == SecretRef("file", "/etc/multibackup/ali-secret")
    assert ali.describe() == "oss://site-backup/prod"

    box = full.destinations["box"].location
    assert (box.scheme, box.endpoint, box.path) == ("sftp", "box.example.com", "srv/backups/site")
    assert box.options == {"username": "backup", "port": "2222"}
    assert full.destinations["box"].credentials["key_file"] == SecretRef(
        "value", "/root/.ssh/id_ed25519")


def test_plans_load_with_policies_schedules_and_inherited_defaults(full: Config) -> None:
    assert full.defaults.cache_dir == "/var/cache/multibackup"
    web = full.plan("website")
    assert web.sources == ["/var/www", "/etc/nginx"]
    assert web.destinations == ["local", "aws", "ali"]
    assert (web.exclude, web.tags, web.compression) == (["*.tmp", "cache/"], ["web"], 3)
    assert web.host == "web1"  # from [defaults]
    assert web.schedule is not None and web.schedule.cron == "30 2 * * *"
    assert web.retention == Policy(daily=7, weekly=4)
    # the per-destination table is laid over the plan's policy
    assert web.retention_for("ali") == Policy(daily=7, weekly=4, monthly=12)
    assert web.retention_for("aws") == Policy(daily=7, weekly=4)
    assert web.password_source == SecretRef("file", "/etc/multibackup/password")
    assert [d.name for d in full.destinations_of(web)] == ["local", "aws", "ali"]

    mail = full.plans["mail"]
    assert mail.host == "mail1"
    assert mail.retention is None and mail.retention_for("box") is None
    assert mail.password_source == SecretRef("env", "MAIL_BACKUP_PASSWORD")
    assert mail.compression is None


def test_describe_plans_gives_safe_plain_data(full: Config) -> None:
    web, mail = describe_plans(full)
    assert web == {
        "name": "website", "sources": ["/var/www", "/etc/nginx"],
        "destinations": [{"name": "local", "location": "/mnt/backup/site"},
                         {"name": "aws", "location": "s3://my-bucket/site"},
                         {"name": "ali", "location": "oss://site-backup/prod"}],
        "schedule": "daily 02:30", "schedule_cron": "30 2 * * *",
        "retention": {"keep_daily": 7, "keep_weekly": 4},
        "retention_per_destination": {"ali": {"keep_daily": 7, "keep_weekly": 4,
                                               "keep_monthly": 12}},
        "exclude": ["*.tmp", "cache/"], "tags": ["web"], "host": "web1", "compression": 3,
        "password": "file /etc/multibackup/password", "hooks": {}}
    assert mail["destinations"] == [
        {"name": "box", "location": "sftp://backup@box.example.com:2222/srv/backups/site"}]
    assert mail["retention"] is None
    assert mail["password"] == "environment variable MAIL_BACKUP_PASSWORD"


def test_unknown_plan_or_destination_by_name_suggests(full: Config) -> None:
    with pytest.raises(UsageError, match=r"unknown plan 'webiste' in config.toml "
                                         r"\(did you mean 'website'\?\)"):
        full.plan("webiste")
    with pytest.raises(UsageError, match=r"unknown destination 'x' in config.toml "
                                         r"\(known: ali, aws, box, local\)"):
        full.destination("x")


def test_example_file_loads() -> None:
    config = load_config(EXAMPLE)
    assert set(config.plans) == {"website", "mail"}
    assert set(config.destinations) == {"local", "aws", "ali", "office", "box"}
    for plan in config.plans.values():
        assert plan.password_source is not None
        assert plan.schedule is not None


def test_documented_example_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    doc = (EXAMPLE.parent.parent / "docs" / "config.md").read_text(encoding="utf-8")
    example = doc.split("## Full example", 1)[1].split("```toml\n", 1)[1].split("```", 1)[0]
    config = load_config(write(tmp_path, monkeypatch, example))
    assert config.destinations["azure"].location.scheme == "azblob"
    assert config.destinations["dav"].credentials["password"] == SecretRef(
        "command", ("pass", "show", "dav/backup"))
    assert config.plans["website"].retention_for("ali") == Policy(daily=7, weekly=4, monthly=12)


def test_azure_endpoint_from_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(write(tmp_path, monkeypatch, """\
        [destinations.azurite]
        location = "azure://backups/site"
        endpoint = "http://127.0.0.1:10000/devstoreaccount1/"
        account_name = "devstoreaccount1"
        account_key = { env = "AZURITE_KEY" }
        """))
    location = config.destinations["azurite"].location
    assert (location.bucket, location.path) == ("backups", "site")
    assert location.endpoint == "http://127.0.0.1:10000/devstoreaccount1"


def test_tilde_and_empty_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    config = load_config(write(tmp_path, monkeypatch, """\
        [destinations.home]
        location = "~/backup"
        [plans.docs]
        sources = ["~/Documents"]
        destinations = ["home"]
        password_file = "~/.mb-password"
        """))
    assert config.destinations["home"].location.path == f"{tmp_path}/backup"
    assert config.plans["docs"].sources == [f"{tmp_path}/Documents"]
    assert config.plans["docs"].password_source == SecretRef("file", f"{tmp_path}/.mb-password")
    empty = load_config(write(tmp_path, monkeypatch, ""))
    assert (empty.destinations, empty.plans) == ({}, {})


# ---- one line per mistake, at the right line ----------------------------------------------

ERRORS = [
    pytest.param("""\
        [plans.website]
        sources = ["/var/www"]
        tags = [web]
        """, "config.toml:3: plans.website.tags: invalid TOML: invalid value (column 9)",
        id="toml-syntax"),
    pytest.param("""\
        [destinations.a]
        location = "/a"
        [destinations.a]
        """, "config.toml:3: destinations.a: invalid TOML: cannot declare destinations.a twice "
        "(column 16)", id="toml-duplicate-table"),
    pytest.param("""\
        [plans.website]
        sources = ["/var/www",
        """, "config.toml:2: plans.website.sources: invalid TOML: invalid value at the end of "
        "the file", id="toml-unclosed"),
    pytest.param("""\
        # backups
        [destination.local]
        location = "/b"
        """, "config.toml:2: destination: unknown key (did you mean 'destinations'?)",
        id="unknown-top-level"),
    pytest.param("""\
        [destinations.aws]
        location = "s3://b/p"
        regoin = "eu-west-1"
        """, "config.toml:3: destinations.aws.regoin: unknown key (did you mean 'region'?)",
        id="unknown-key-suggestion"),
    pytest.param("""\
        destinations.aws.location = "s3://b/p"
        destinations.aws.regoin = "eu-west-1"
        """, "config.toml:2: destinations.aws.regoin: unknown key (did you mean 'region'?)",
        id="unknown-dotted-key"),
    pytest.param("""\
        [plans.web]
        sources = ["/a"]
        destinations = ["l"]
        frequency = "daily"
        [destinations.l]
        location = "/b"
        """, "config.toml:4: plans.web.frequency: unknown key (known: compression, destinations, "
        "exclude, hooks, host, password_command, password_env, password_file, retention, "
        "retention_per_destination, schedule, sources, tags)", id="unknown-key-known-list"),
    pytest.param("""\
        [destinations.l]
        location = "/b"
        [plans.web]
        sources = ["/a"]
        destinations = ["l"]
        compression = "3"
        """, "config.toml:6: plans.web.compression: expected an integer, got a string",
        id="wrong-type"),
    pytest.param("""\
        [destinations.l]
        location = "/b"
        [plans.web]
        sources = ["/a"]
        destinations = ["l"]
        compression = 23
        """, "config.toml:6: plans.web.compression: 23 is out of range: use from 0 to 22",
        id="out-of-range"),
    pytest.param("""\
        [destinations.l]
        location = "/b"

        [plans.web]
        destinations = ["l"]
        """, "config.toml:4: plans.web.sources: missing (required)", id="missing-required"),
    pytest.param("""\
        [destinations.l]
        [destinations.m]
        location = "/m"
        """, "config.toml:1: destinations.l.location: missing (required): give location "
        "(or provider with bucket)", id="missing-location"),
    pytest.param("""\
        [destinations.local]
        location = "/b"
        [destinations.aws]
        location = "s3://b/p"

        [plans.website]
        sources = ["/var/www"]
        destinations = [
          "local",
          "az",
        ]
        """, "config.toml:10: plans.website.destinations: unknown destination 'az' "
        "(known: aws, local)", id="unknown-destination"),
    pytest.param("""\
        [destinations.local]
        location = "/b"
        [plans.website]
        sources = ["/var/www"]
        destinations = ["locl"]
        """, "config.toml:5: plans.website.destinations: unknown destination 'locl' "
        "(did you mean 'local'?)", id="unknown-destination-suggestion"),
    pytest.param("""\
        [destinations.local]
        location = "/b"
        [plans.website]
        sources = ["/var/www"]
        destinations = ["local", "local"]
        """, "config.toml:5: plans.website.destinations: 'local' is listed twice",
        id="duplicate-destination"),
    pytest.param("""\
        [destinations.local]
        location = "/b"
        [destinations.aws]
        location = "s3://b/p"
        [plans.website]
        sources = ["/var/www"]
        destinations = ["local"]
        [plans.website.retention]
        keep_daily = 7
        [plans.website.retention_per_destination.aws]
        keep_monthly = 12
        """, "config.toml:10: plans.website.retention_per_destination.aws: 'aws' is not one of "
        "this plan's destinations (local)", id="retention-for-other-destination"),
    pytest.param("""\
        [destinations.l]
        location = "backups/site"
        """, "config.toml:2: destinations.l.location: 'backups/site' is not an absolute path",
        id="relative-location"),
    pytest.param("""\
        [destinations.l]
        location = "s3:ftp://host/bucket"
        """, "config.toml:2: destinations.l.location: invalid S3 location 's3:ftp://host/bucket': "
        "expected s3:https://host/bucket/prefix", id="invalid-location"),
    pytest.param("""\
        [destinations.l]
        location = "/b"
        region = "eu-west-1"
        """, "config.toml:3: destinations.l.region: not used by local paths (they take: "
        "nothing more)", id="key-not-for-this-kind"),
    pytest.param("""\
        [destinations.box]
        location = "sftp://u@h/p"
        access_key_id = "AKIA1"
        """, "config.toml:3: destinations.box.access_key_id: not used by SFTP locations (they "
        "take: host_key_policy, key_file, key_passphrase, known_hosts, password, username)",
        id="credential-not-for-this-kind"),
    pytest.param("""\
        [destinations.x]
        location = "/b"
        provider = "oss"
        """, "config.toml:3: destinations.x.provider: give either location or provider, "
        "not both", id="location-and-provider"),
    pytest.param("""\
        [destinations.x]
        provider = "osss"
        bucket = "b"
        """, "config.toml:2: destinations.x.provider: unknown S3 provider 'osss': use one of aws, "
        "oss, cos, qiniu, obs, b2, wasabi, r2, minio, seaweedfs, s3", id="unknown-provider"),
    pytest.param("""\
        [destinations.x]
        provider = "oss"
        region = "cn-hangzhou"
        """, "config.toml:1: destinations.x.bucket: missing (required)", id="provider-no-bucket"),
    pytest.param("""\
        [destinations.l]
        location = "/b"
        [plans.web]
        sources = ["/a"]
        destinations = ["l"]
        schedule = "daily 25:00"
        """, "config.toml:6: plans.web.schedule: invalid time '25:00': use HH:MM, 24-hour "
        "(e.g. 02:30)", id="invalid-schedule"),
    pytest.param("""\
        [destinations.l]
        location = "/b"
        [plans.web]
        sources = ["/a"]
        destinations = ["l"]
        schedule = "0 3 * *"
        """, 'config.toml:6: plans.web.schedule: invalid schedule \'0 3 * *\': use "hourly", '
        '"daily HH:MM", "weekly DAY HH:MM" or cron "MIN HOUR DOM MON DOW"', id="short-cron"),
    pytest.param("""\
        [destinations.l]
        location = "/b"
        [plans.web]
        sources = ["/a"]
        destinations = ["l"]
        [plans.web.retention]
        keep_daily = 7
        keep_weekly = -1
        """, "config.toml:8: plans.web.retention.keep_weekly: -1 is out of range: use 0 or more",
        id="negative-retention"),
    pytest.param("""\
        [destinations.l]
        location = "/b"
        [plans.web]
        sources = ["/a"]
        destinations = ["l"]
        retention = { keep_within = "3x" }
        """, "config.toml:6: plans.web.retention.keep_within: invalid duration '3x': use e.g. "
        "7d, 2w, 1m, 1y2m3d4h", id="bad-duration-inline"),
    pytest.param("""\
        [destinations.l]
        location = "/b"
        [plans.web]
        sources = ["/a"]
        destinations = ["l"]
        [plans.web.retention]
        keep_dayly = 7
        """, "config.toml:7: plans.web.retention.keep_dayly: unknown key (did you mean "
        "'keep_daily'?)", id="retention-typo"),
    pytest.param("""\
        [destinations.l]
        location = "/b"
        [plans.web]
        sources = ["/a"]
        destinations = ["l"]
        [plans.web.retention]
        keep_daily = 0
        """, "config.toml:6: plans.web.retention: keeps nothing: give at least one keep_* "
        "above 0", id="empty-retention"),
    pytest.param("""\
        [destinations.l]
        location = "/b"
        [plans.web]
        sources = ["/a", "srv"]
        destinations = ["l"]
        """, "config.toml:4: plans.web.sources: 'srv' is neither an absolute path, a URL nor "
        "a source in [sources]", id="relative-source"),
    pytest.param("""\
        [plans."my plan"]
        sources = ["/a"]
        """, "config.toml:1: plans.\"my plan\": invalid plan name: use letters, digits, '-' "
        "and '_'", id="bad-name"),
    pytest.param("""\
        [defaults]
        password_file = "/p"
        password_env = "P"
        """, "config.toml:3: defaults.password_env: give only one of password_file, "
        "password_env", id="two-password-sources"),
    pytest.param("""\
        [defaults]
        password_command = "pass show backup"
        """, "config.toml:2: defaults.password_command: expected an array: the program and its "
        "arguments (run without a shell)", id="password-command-string"),
    pytest.param("""\
        [destinations.aws]
        location = "s3://b/p"
        access_key_id = { env = "A", file = "/k" }
        """, "config.toml:3: destinations.aws.access_key_id: give exactly one of env, file or "
        "command", id="two-references"),
    pytest.param("""\
        [destinations.aws]
        location = "s3://b/p"
        access_key_id = { ennv = "A" }
        """, "config.toml:3: destinations.aws.access_key_id.ennv: unknown key (did you "
        "mean 'env'?)", id="reference-typo"),
]


@pytest.mark.parametrize(("text", "expected"), ERRORS)
def test_error_names_file_line_and_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                       text: str, expected: str) -> None:
    assert error_of(tmp_path, monkeypatch, text) == expected


SECRET = "wJalrXUtnFEMI-K7MDENG-bPxRfiCY"


@pytest.mark.parametrize(("text", "expected"), [
    pytest.param(f"""\
        [destinations.aws]
        location = "s3://b/p"
        access_key_id = {{ env = "AWS_KEY" }}
        secret_access_key = "{SECRET}"
        """, "config.toml:4: destinations.aws.secret_access_key: secrets must not be written in "
        'the config: write it as { env = "VARIABLE" } or { file = "/path" }, not in the config '
        "itself", id="plain-secret"),
    pytest.param(f"""\
        [destinations.box]
        location = "sftp://backup:{SECRET}@box/srv"
        """, "config.toml:2: destinations.box.location: a password must not be written in the "
        'location: give password = { env = "VARIABLE" } or { file = "/path" }',
        id="password-in-url"),
    pytest.param(f"""\
        [destinations.l]
        location = "/b"
        [plans.web]
        sources = ["/a"]
        destinations = ["l"]
        password_env = "{SECRET}"
        """, "config.toml:6: plans.web.password_env: not an environment variable name (letters, "
        "digits and '_'; the value itself never goes here)", id="secret-as-env-name"),
    pytest.param(f"""\
        [defaults]
        password_file = "{SECRET}"
        """, "config.toml:2: defaults.password_file: must be an absolute path",
        id="secret-as-password-file"),
    pytest.param(f"""\
        [destinations.aws]
        location = "s3://b/p"
        secret_access_key = {SECRET}
        """, "config.toml:3: destinations.aws.secret_access_key: invalid TOML: invalid value "
        "(column 21)", id="unquoted-secret"),
])
def test_errors_never_show_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str,
                                    expected: str) -> None:
    message = error_of(tmp_path, monkeypatch, text)
    assert message == expected
    assert SECRET not in message


def test_file_level_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError, match=r"^cannot read config file nope.toml: No such file"):
        load_config("nope.toml")
    (tmp_path / "bad.toml").write_bytes(b'[defaults]\nhost = "caf\xe9"\n')
    with pytest.raises(UsageError, match=r"^bad.toml:2: not UTF-8 text$"):
        load_config("bad.toml")


# ---- line numbers -------------------------------------------------------------------------


def test_locator_finds_every_kind_of_key() -> None:
    text = textwrap.dedent('''\
        # comment with [brackets] and key = "value"
        top = 1
        [a]
        s = """multi
        [not.a.table]
        line"""
        dotted.key = 'x'   # trailing comment
        inline = { env = "X", file = "/y" }
        list = [
          "one",   # one
          { q = 1 },
        ]

        [a."quoted key".b]
        c = true
        [[arr]]
        x = 1
        [[arr]]
        x = 2
        [arr.sub]
        y = 3
        [a]
        ''')
    lines = KeyLocator(text)
    assert lines.line_of(("top",)) == 2
    assert lines.line_of(("a", "s")) == 4
    assert lines.line_of(("a", "dotted", "key")) == 7
    assert lines.line_of(("a", "dotted")) == 7
    assert lines.line_of(("a", "inline", "file")) == 8
    assert lines.line_of(("a", "list", 0)) == 10
    assert lines.line_of(("a", "list", 1, "q")) == 11
    assert lines.line_of(("a", "quoted key", "b", "c")) == 15
    assert lines.line_of(("arr", 0, "x")) == 17
    assert lines.line_of(("arr", 1, "x")) == 19
    assert lines.line_of(("arr", 1, "sub", "y")) == 21
    assert lines.line_of(("a",)) == 3  # its first header, not the repeated (invalid) one
    # missing keys fall back to the nearest enclosing table, then to line 1
    assert lines.line_of(("a", "quoted key", "b", "missing")) == 14
    assert lines.line_of(("not", "a", "table")) == 1


def test_implicit_table_takes_its_own_header_line() -> None:
    lines = KeyLocator("[plans.web.retention]\nkeep_daily = 1\n[plans.web]\nsources = []\n")
    assert lines.line_of(("plans", "web")) == 3
    assert lines.line_of(("plans",)) == 1


# ---- secrets at use time ------------------------------------------------------------------


def test_credentials_resolve_from_env_and_files_at_use_time(
        full: Config, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    aws = full.destinations["aws"]
    monkeypatch.setenv("AWS_KEY_PROD", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_PROD", SECRET)
    creds = aws.resolve_credentials()
    assert creds == {"access_key_id": "AKIAEXAMPLE", "secret_access_key": SECRET}
    assert isinstance(creds, ResolvedCredentials)
    assert SECRET not in repr(creds) and SECRET not in str(creds)

    monkeypatch.delenv("AWS_SECRET_PROD")
    with pytest.raises(UsageError) as info:
        aws.resolve_credentials()
    assert str(info.value) == ("destination 'aws': secret_access_key: environment variable "
                               "AWS_SECRET_PROD is not set")

    secret_file = tmp_path / "ali-secret"
    secret_file.write_text(SECRET + "\n")
    ref = SecretRef("file", str(secret_file))
    assert ref.resolve("x") == SECRET
    with pytest.raises(UsageError, match=r"^x: cannot read /nonexistent: No such file"):
        SecretRef("file", "/nonexistent").resolve("x")


def test_open_store_passes_resolved_credentials(
        full: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_open_store(location, retries=4, credentials=None):
        calls.append((location, retries, credentials))
        return "store"

    monkeypatch.setattr(locations, "open_store", fake_open_store)
    monkeypatch.setenv("AWS_KEY_PROD", "AKIAEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_PROD", SECRET)
    assert full.destinations["aws"].open_store(retries=2) == "store"
    assert full.destinations["local"].open_store() == "store"
    (loc, retries, creds), (loc2, _, creds2) = calls
    assert loc.bucket == "my-bucket" and retries == 2
    assert creds == {"access_key_id": "AKIAEXAMPLE", "secret_access_key": SECRET}
    # no credential keys: the store falls back to the environment, as on the command line
    assert loc2.path == "/mnt/backup/site" and creds2 is None


def test_open_store_opens_a_real_local_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(write(tmp_path, monkeypatch, f"""\
        [destinations.here]
        location = "{tmp_path}/repo"
        """))
    store = config.destinations["here"].open_store()
    store.put("hello", b"world")
    assert store.get("hello") == b"world"


def test_password_sources(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("from file\n")
    script = tmp_path / "pw.py"
    script.write_text("import sys; print('from command'); print('second line')")
    config = load_config(write(tmp_path, monkeypatch, f"""\
        [defaults]
        password_file = "{tmp_path}/pw"
        [destinations.l]
        location = "/b"
        [plans.a]
        sources = ["/a"]
        destinations = ["l"]
        [plans.b]
        sources = ["/a"]
        destinations = ["l"]
        password_env = "B_PASSWORD"
        [plans.c]
        sources = ["/a"]
        destinations = ["l"]
        password_command = ["{sys.executable}", "{script}"]
        [plans.d]
        sources = ["/a"]
        destinations = ["l"]
        password_command = ["{sys.executable}", "-c", "import sys; sys.exit(3)"]
        """))
    assert config.plans["a"].password() == "from file"
    monkeypatch.setenv("B_PASSWORD", "from env")
    assert config.plans["b"].password() == "from env"
    monkeypatch.delenv("B_PASSWORD")
    with pytest.raises(UsageError, match=r"^plan 'b': password: environment variable B_PASSWORD "
                                         r"is not set$"):
        config.plans["b"].password()
    assert config.plans["c"].password() == "from command"
    with pytest.raises(UsageError, match=r"^plan 'd': password: command '.*python.*' exited "
                                         r"with status 3$"):
        config.plans["d"].password()
    with pytest.raises(UsageError, match=r"^x: command 'no-such-program-mb' not found$"):
        SecretRef("command", ("no-such-program-mb",)).resolve("x")


def test_plan_without_password_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = load_config(write(tmp_path, monkeypatch, """\
        [destinations.l]
        location = "/b"
        [plans.web]
        sources = ["/a"]
        destinations = ["l"]
        """))
    with pytest.raises(UsageError, match=r"^plan 'web' has no password: set password_file, "
                                         r"password_env or password_command in \[plans.web\] "
                                         r"or \[defaults\]$"):
        config.plans["web"].password()


def test_no_secret_or_plain_credential_in_any_repr(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET", SECRET)
    config = load_config(write(tmp_path, monkeypatch, """\
        [defaults]
        password_env = "MB_PASSWORD"
        [destinations.aws]
        location = "s3://b/p"
        access_key_id = "AKIAPLAINID"
        secret_access_key = { env = "AWS_SECRET" }
        [plans.web]
        sources = ["/a"]
        destinations = ["aws"]
        """))
    monkeypatch.setenv("MB_PASSWORD", "hunter2-password")
    assert config.plans["web"].password() == "hunter2-password"
    text = repr(config) + str(config) + repr(describe_plans(config))
    text += repr(config.destinations["aws"].resolve_credentials())
    for secret in (SECRET, "AKIAPLAINID", "hunter2-password"):
        assert secret not in text
    assert "SecretRef(env='AWS_SECRET')" in text


# ---- schedules and the default path -------------------------------------------------------


@pytest.mark.parametrize(("text", "cron"), [
    ("hourly", "0 * * * *"),
    ("daily 02:30", "30 2 * * *"),
    ("daily 2:05", "5 2 * * *"),
    ("weekly sun 23:59", "59 23 * * 0"),
    ("Weekly Monday 04:00", "0 4 * * 1"),
    ("*/15 0-6/2 1,15 jan-mar mon-fri", "*/15 0-6/2 1,15 jan-mar mon-fri"),
    ("0 0 * * 7", "0 0 * * 7"),
])
def test_schedules(text: str, cron: str) -> None:
    assert parse_schedule(text).cron == cron


@pytest.mark.parametrize(("text", "reason"), [
    ("daily", "invalid schedule 'daily'"),
    ("weekly funday 02:00", "invalid day 'funday'"),
    ("60 * * * *", "invalid minute '60': values run from 0 to 59"),
    ("* * 0 * *", "invalid day of month '0': values run from 1 to 31"),
    ("* * * 13 *", "invalid month '13': values run from 1 to 12 or jan-dec"),
    ("5-1 * * * *", "invalid minute '5-1': range 5-1 runs backwards"),
    ("*/0 * * * *", "invalid minute '*/0': a step must be a number above 0"),
    ("3/5 * * * *", "invalid minute '3/5': a step needs * or a range before it"),
    ("", "empty schedule"),
])
def test_invalid_schedules(text: str, reason: str) -> None:
    with pytest.raises(ScheduleError) as info:
        parse_schedule(text)
    assert str(info.value).startswith(reason)


def test_find_config_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "SYSTEM_CONFIG", str(tmp_path / "etc" / "config.toml"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("MULTIBACKUP_CONFIG", raising=False)
    with pytest.raises(UsageError, match=r"^no config file: give --config, set "
                                         r"MULTIBACKUP_CONFIG, or create .*/xdg/multibackup/"
                                         r"config.toml or .*/etc/config.toml$"):
        find_config()
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "config.toml").write_text("")
    assert find_config() == str(tmp_path / "etc" / "config.toml")
    (tmp_path / "xdg" / "multibackup").mkdir(parents=True)
    (tmp_path / "xdg" / "multibackup" / "config.toml").write_text("")
    assert find_config() == str(tmp_path / "xdg" / "multibackup" / "config.toml")
    monkeypatch.setenv("MULTIBACKUP_CONFIG", str(tmp_path / "explicit.toml"))
    assert find_config() == str(tmp_path / "explicit.toml")
    monkeypatch.setenv("MULTIBACKUP_CONFIG", os.fspath(EXAMPLE))
    assert set(load_config().plans) == {"website", "mail"}
