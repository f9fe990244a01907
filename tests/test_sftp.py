"""The SFTP store against a real OpenSSH server: data, errors, outages, and a whole repository."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest
from conftest import CLI, _free_port, make_tree, snapshot_of_tree
from servers_sftp import SFTPServer, start_sftp_server

from multibackup.backends import sftp_store
from multibackup.backends.base import ObjectInfo, ObjectStore
from multibackup.backends.sftp_store import SFTPStore
from multibackup.errors import ObjectExists, ObjectNotFound, StorageFull, StoreError

MiB = 1024 * 1024
SECRET = "hunter2-sftp-Secret-9d1e"


@pytest.fixture
def server(sftp_server: SFTPServer) -> Iterator[SFTPServer]:
    """The session's server; stores a test opened are closed after it (sshd sessions end)."""
    yield sftp_server
    sftp_server.close_stores()
    if sftp_server.process is None:  # a test stopped it and failed before starting it again
        sftp_server.start()


def _keygen(path: Path, kind: str = "ed25519", passphrase: str = "") -> Path:
    args = ["-b", "2048"] if kind == "rsa" else []
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *args, "-N", passphrase, "-f", str(path)],
                   check=True, capture_output=True)
    return path


def _one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    text = str(exc.value)
    assert "\n" not in text and text
    return text


def test_round_trip(server: SFTPServer) -> None:
    store = server.store("round")
    assert isinstance(store, ObjectStore)
    assert store.description == f"sftp://{server.user}@127.0.0.1:{server.port}{server.root}/round"
    assert store.concurrency == 4 and store.is_local is False
    big = os.urandom(16 * MiB + 5)
    store.put("data/ab/big", big)
    store.put("config", b"cfg")
    store.put("index/1", bytearray(b"idx"))
    store.put("deep/a/b/c/d", b"")
    # the bytes are where the key says, nothing else is left behind
    assert (server.root / "round" / "data" / "ab" / "big").read_bytes() == big
    assert os.listdir(server.root / "round" / ".tmp") == []
    assert store.get("data/ab/big") == big
    assert store.get("data/ab/big", 3, 10) == big[3:13]
    assert store.get("data/ab/big", 16 * MiB - 7) == big[16 * MiB - 7:]
    assert store.get("data/ab/big", 1000, 5 * MiB + 1) == big[1000:1000 + 5 * MiB + 1]
    assert store.get("data/ab/big", 5, 0) == b""
    assert store.get("deep/a/b/c/d") == b""
    def tag(key: str) -> str:  # size and whole-second time, as the server tells them
        st = (server.root / "round" / key).stat()
        return f"{st.st_size:x}-{int(st.st_mtime):x}"

    big_info = ObjectInfo("data/ab/big", 16 * MiB + 5, tag("data/ab/big"))
    assert store.stat("data/ab/big") == big_info
    assert store.exists("config") and not store.exists("data/ab")  # a directory is no object
    assert list(store.list()) == [  # depth first, in name order
        ObjectInfo("config", 3, tag("config")), big_info,
        ObjectInfo("deep/a/b/c/d", 0, tag("deep/a/b/c/d")), ObjectInfo("index/1", 3, tag("index/1"))]
    assert [i.key for i in store.list("data/")] == ["data/ab/big"]
    assert [i.key for i in store.list("de")] == ["deep/a/b/c/d"]
    assert list(store.list("nothing/here/")) == []
    store.delete("data/ab/big")
    store.delete("data/ab/big")  # deleting a missing key is fine
    assert not store.exists("data/ab/big")
    assert not (server.root / "round" / "data" / "ab" / "big").exists()


def test_transfer_speed_16mib(server: SFTPServer) -> None:
    """A pack-sized object goes both ways in well under a second on loopback."""
    store = server.store("speed")
    data = os.urandom(16 * MiB)
    store.put("warm-up", b"x")  # the connection (key exchange, login) is not measured
    put_times, get_times = [], []
    for _ in range(3):
        started = time.perf_counter()
        store.put("pack", data)
        put_times.append(time.perf_counter() - started)
        started = time.perf_counter()
        assert store.get("pack") == data
        get_times.append(time.perf_counter() - started)
    print(f"16 MiB put {min(put_times):.3f} s, get {min(get_times):.3f} s")
    assert min(put_times) < 1.0 and min(get_times) < 1.0


def test_connections_are_tuned_for_cheap_transfers(server: SFTPServer) -> None:
    """AES-GCM, no compression, no Nagle delay, and the server's request size limits."""
    store = server.store("tuned", connections=1)
    store.put("warm-up", b"x")
    conn = store._acquire()
    try:
        transport = conn.client.get_transport()
        assert transport is not None
        assert transport.local_cipher == transport.remote_cipher == "aes128-gcm@openssh.com"
        assert transport.local_compression == transport.remote_compression == "none"
        assert transport.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        # OpenSSH (8.6+) states 255 KiB for both in limits@openssh.com
        assert conn.sftp.read_size == conn.sftp.write_size == 255 * 1024
    finally:
        store._release(conn)


def test_no_weak_algorithms_are_offered() -> None:
    transport = sftp_store._transport(socket.socket())
    try:
        options = transport.get_security_options()
        assert options.ciphers[0] == "aes128-gcm@openssh.com"
        assert not [c for c in options.ciphers if "cbc" in c]
        assert not [m for m in options.digests if "md5" in m or m.endswith("-96")]
    finally:
        transport.close()


class _FakeLimits:
    """Just enough of an SFTP client to answer (or refuse) limits@openssh.com."""

    read_size = write_size = sftp_store._CHUNK

    def __init__(self, *limits: int) -> None:
        self.limits = limits

    def _request(self, kind: int, *args: object) -> tuple[int, paramiko.Message]:
        if not self.limits:
            raise OSError("Operation unsupported")
        msg = paramiko.Message()
        for value in self.limits:
            msg.add_int64(value)
        msg.rewind()
        return sftp_store.CMD_EXTENDED_REPLY, msg


@pytest.mark.parametrize(("limits", "sizes"), [
    ((), (32 * 1024, 32 * 1024)),  # no limits@openssh.com: the size every server takes
    ((0, 0, 0, 64), (32 * 1024, 32 * 1024)),  # no limits stated
    ((256 * 1024, 255 * 1024, 255 * 1024, 64), (255 * 1024, 255 * 1024)),  # OpenSSH
    ((64 * 1024, 0, 1 << 30, 64), (63 * 1024, 63 * 1024)),  # the packet size bounds both
    ((0, 16 * 1024, 1 << 30, 0), (16 * 1024, 255 * 1024)),  # lower kept, higher capped
])
def test_request_sizes_follow_the_servers_limits(limits: tuple[int, ...],
                                                 sizes: tuple[int, int]) -> None:
    fake = _FakeLimits(*limits)
    sftp_store._SFTP.learn_limits(fake)  # type: ignore[arg-type]
    assert (fake.read_size, fake.write_size) == sizes


@pytest.mark.parametrize(("read_size", "write_size"), [(1000, 777), (32 * 1024, 32 * 1024)])
def test_round_trip_with_other_request_sizes(server: SFTPServer, read_size: int,
                                             write_size: int) -> None:
    """Servers without limits@openssh.com get 32 KiB requests; odd sizes cross every edge."""
    store = server.store(f"sizes-{read_size}", connections=1)
    store.put("warm-up", b"x")
    conn = store._acquire()
    conn.sftp.read_size, conn.sftp.write_size = read_size, write_size
    store._release(conn)
    data = os.urandom(3 * MiB + 12345)
    store.put("obj", data)
    assert (server.root / f"sizes-{read_size}" / "obj").read_bytes() == data
    assert store.get("obj") == data
    assert store.get("obj", 999, 2 * MiB + 1) == data[999:999 + 2 * MiB + 1]
    store.put_new("new", data[:write_size * 3])
    assert store.get("new") == data[:write_size * 3]


def test_reads_larger_than_the_server_sends_are_completed(server: SFTPServer) -> None:
    """Asking for more than the server answers per read (OpenSSH: 255 KiB) gives short
    reads, which are asked for again from where they stopped."""
    store = server.store("short-reads", connections=1)
    data = os.urandom(3 * MiB + 5)
    store.put("obj", data)
    conn = store._acquire()
    conn.sftp.read_size = MiB
    store._release(conn)
    assert store.get("obj") == data
    assert store.get("obj", 7, 2 * MiB) == data[7:7 + 2 * MiB]
    with pytest.raises(StoreError, match="short read: got 5 of 1048581 bytes"):
        store.get("obj", 3 * MiB, MiB + 5)


def test_put_replaces_and_put_new_is_create_only(server: SFTPServer) -> None:
    store = server.store("replace")
    store.put("keys/a", b"old content")
    store.put("keys/a", b"new")
    assert store.get("keys/a") == b"new"
    store.put_new("keys/b", b"first")
    with pytest.raises(ObjectExists) as exc:
        store.put_new("keys/b", b"second")
    assert "already exists" in _one_line(exc)
    assert store.get("keys/b") == b"first"
    assert (server.root / "replace" / "keys" / "b").read_bytes() == b"first"
    store.put_new("fresh/dir/c", b"created with its directories")
    assert store.get("fresh/dir/c") == b"created with its directories"
    assert os.listdir(server.root / "replace" / ".tmp") == []  # losers' temp files removed


def test_put_new_race_has_one_winner(server: SFTPServer) -> None:
    store = server.store("race", connections=8)
    results: dict[int, str] = {}
    barrier = threading.Barrier(8)

    def write(i: int) -> None:
        store.exists("warm")  # connect first, so the puts really race
        barrier.wait()
        try:
            store.put_new("config", f"writer {i}".encode())
            results[i] = "won"
        except ObjectExists:
            results[i] = "lost"

    threads = [threading.Thread(target=write, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, r in results.items() if r == "won"]
    assert len(results) == 8 and len(winners) == 1
    assert store.get("config") == f"writer {winners[0]}".encode()


def test_concurrent_puts_share_a_bounded_pool(server: SFTPServer) -> None:
    store = server.store("threads")
    opened = []
    connect = store._connect

    def counting_connect():  # type: ignore[no-untyped-def]
        opened.append(1)
        return connect()

    store._connect = counting_connect  # type: ignore[method-assign]
    blobs = {f"data/{i:02x}/pack{i}": os.urandom(MiB + i * 7919) for i in range(24)}
    errors: list[BaseException] = []

    def upload(keys: list[str]) -> None:
        try:
            for key in keys:
                store.put(key, blobs[key])
                assert store.get(key) == blobs[key]
        except BaseException as exc:  # reported below
            errors.append(exc)

    keys = sorted(blobs)
    threads = [threading.Thread(target=upload, args=(keys[i::8],)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert 1 <= len(opened) <= 4  # never more connections than allowed, and they are reused
    assert {i.key: i.size for i in store.list("data/")} == {k: len(v) for k, v in blobs.items()}
    for key, value in blobs.items():
        assert (server.root / "threads" / key).read_bytes() == value


def test_listing_while_reading_with_one_connection(server: SFTPServer) -> None:
    """list() holds no connection between directories, so using the store inside the loop
    cannot deadlock, even when the pool has a single connection."""
    store = server.store("one", connections=1)
    for i in range(5):
        store.put(f"snapshots/{i}", str(i).encode())
    seen = {info.key: store.get(info.key) for info in store.list("snapshots/")}
    assert seen == {f"snapshots/{i}": str(i).encode() for i in range(5)}


def test_missing_objects(server: SFTPServer) -> None:
    store = server.store("missing")
    with pytest.raises(ObjectNotFound) as exc:
        store.get("config")
    assert "config: object not found" in _one_line(exc)
    with pytest.raises(ObjectNotFound):
        store.get("data/aa/bb", 10, 20)
    with pytest.raises(ObjectNotFound):
        store.stat("config")
    assert store.exists("config") is False
    store.delete("config")
    assert list(store.list()) == [] and list(store.list("data/")) == []
    assert store.sweep_temporary(0) == 0


def test_short_read_is_an_error(server: SFTPServer) -> None:
    store = server.store("short")
    store.put("obj", bytes(range(100)))
    with pytest.raises(StoreError) as exc:
        store.get("obj", 90, 20)
    assert not isinstance(exc.value, ObjectNotFound)
    assert "short read: got 10 of 20 bytes" in _one_line(exc)
    with pytest.raises(StoreError, match="beyond the end"):
        store.get("obj", 101)


def test_sweep_temporary_removes_only_old_temp_files(server: SFTPServer) -> None:
    store = server.store("sweep")
    store.put("data/keep", b"object")
    tmp = server.root / "sweep" / ".tmp"
    old, recent = tmp / "dead.tmp", tmp / "busy.tmp"
    old.write_bytes(b"left by a killed upload")
    recent.write_bytes(b"being written right now")
    two_hours_ago = time.time() - 7200
    os.utime(old, (two_hours_ago, two_hours_ago))
    assert [i.key for i in store.list()] == ["data/keep"]  # temp files are not objects
    assert store.sweep_temporary(3600) == 1
    assert not old.exists() and recent.exists()
    assert store.get("data/keep") == b"object"


def test_wrong_key_file_is_an_authentication_error(server: SFTPServer, tmp_path: Path) -> None:
    stranger = _keygen(tmp_path / "stranger")
    store = server.store("auth", key_file=str(stranger))
    started = time.monotonic()
    with pytest.raises(StoreError) as exc:
        store.put("config", b"x")
    text = _one_line(exc)
    assert "authentication failed for user" in text and str(stranger) in text
    assert time.monotonic() - started < 5  # permanent: not retried


def test_missing_key_file(server: SFTPServer, tmp_path: Path) -> None:
    store = server.store("nokey", key_file=str(tmp_path / "absent"))
    with pytest.raises(StoreError) as exc:
        store.exists("config")
    assert "cannot read it (No such file or directory)" in _one_line(exc)


def test_password_never_shows(server: SFTPServer, caplog: pytest.LogCaptureFixture) -> None:
    """This server takes keys only: the refusal names that, and the password goes nowhere."""
    caplog.set_level(logging.DEBUG)
    store = server.store("pw", key_file=None, password=SECRET)
    with pytest.raises(StoreError) as exc:
        store.get("config")
    text = _one_line(exc)
    assert "authentication failed" in text and "the server accepts only publickey" in text
    assert exc.value.__cause__ is None and exc.value.__suppress_context__
    assert "paramiko" in caplog.text  # paramiko did log the attempt...
    assert SECRET not in caplog.text and SECRET not in text  # ...without the password
    assert SECRET not in repr(vars(store))
    # and should paramiko ever log it, the filter blanks it out
    logging.getLogger("paramiko.transport").debug("sending password %s", SECRET)
    assert SECRET not in caplog.text and "sending password ***" in caplog.text


@pytest.mark.parametrize("kind", ["rsa", "ecdsa"])
def test_other_key_types(server: SFTPServer, tmp_path: Path, kind: str) -> None:
    key = _keygen(tmp_path / f"id_{kind}", kind)
    server.authorize(key.with_suffix(".pub"))
    store = server.store(f"kind-{kind}", key_file=str(key))
    store.put("config", kind.encode())
    assert store.get("config") == kind.encode()


def test_encrypted_key_file(server: SFTPServer, tmp_path: Path) -> None:
    key = _keygen(tmp_path / "id_locked", passphrase=SECRET)
    server.authorize(key.with_suffix(".pub"))
    with pytest.raises(StoreError) as exc:
        server.store("enc", key_file=str(key)).exists("config")
    assert "the key is encrypted, give its passphrase" in _one_line(exc)
    with pytest.raises(StoreError) as exc:
        server.store("enc", key_file=str(key), key_passphrase=SECRET[::-1]).exists("config")
    assert "wrong passphrase" in _one_line(exc) and SECRET[::-1] not in str(exc.value)
    store = server.store("enc", key_file=str(key), key_passphrase=SECRET)
    store.put("config", b"unlocked")
    assert store.get("config") == b"unlocked"


def test_default_keys_and_known_hosts_from_home(server: SFTPServer, tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """With no key file and no password, ~/.ssh/id_* and ~/.ssh/known_hosts are used."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_bytes(Path(server.key_file).read_bytes())
    (home / ".ssh" / "id_ed25519").chmod(0o600)
    (home / ".ssh" / "known_hosts").write_bytes(Path(server.known_hosts).read_bytes())
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    store = server.store("home", key_file=None, known_hosts=None)
    store.put("config", b"via default key")
    assert (server.root / "home" / "config").read_bytes() == b"via default key"


def test_unknown_host_is_refused_in_strict_mode(server: SFTPServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with pytest.raises(StoreError) as exc:
        server.store("strict", known_hosts=str(empty)).put("config", b"x")
    text = _one_line(exc)
    assert f"unknown host: [127.0.0.1]:{server.port} is not in {empty}" in text
    assert "SHA256:" in text and "ssh-keyscan" in text and "accept-new" in text
    assert not (server.root / "strict" / "config").exists()


def test_hashed_known_hosts(server: SFTPServer, tmp_path: Path) -> None:
    """Debian and Ubuntu hash known_hosts entries (HashKnownHosts yes)."""
    hashed = tmp_path / "known_hosts"
    hashed.write_bytes(Path(server.known_hosts).read_bytes())
    subprocess.run(["ssh-keygen", "-q", "-H", "-f", str(hashed)], check=True, capture_output=True)
    assert hashed.read_text().startswith("|1|")
    store = server.store("hashed", known_hosts=str(hashed))
    store.put("config", b"x")
    assert store.get("config") == b"x"


def test_accept_new_records_the_host_key(server: SFTPServer, tmp_path: Path) -> None:
    known = tmp_path / "ssh" / "known_hosts"  # neither file nor directory exists yet
    store = server.store("tofu", known_hosts=str(known), host_key_policy="accept-new")
    store.put("config", b"x")
    kind, blob = (server.workdir / "host_ed25519.pub").read_text().split()[:2]
    assert known.read_text() == f"[127.0.0.1]:{server.port} {kind} {blob}\n"
    again = server.store("tofu", known_hosts=str(known))  # strict now knows the server
    assert again.get("config") == b"x"


def test_changed_host_key_is_refused(server: SFTPServer, tmp_path: Path) -> None:
    other = _keygen(tmp_path / "other_host")
    kind, blob = other.with_suffix(".pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{server.port} {kind} {blob}\n")
    for policy in ("strict", "accept-new"):  # trust on first use only, never on change
        with pytest.raises(StoreError) as exc:
            server.store("mitm", known_hosts=str(known), host_key_policy=policy).exists("x")
        text = _one_line(exc)
        assert "host key mismatch" in text and "man-in-the-middle" in text
        assert "ssh-keygen -R" in text
    assert known.read_text().count("\n") == 1


def test_insecure_policy_skips_the_check(server: SFTPServer, tmp_path: Path) -> None:
    store = server.store("insecure", known_hosts=str(tmp_path / "none"),
                         host_key_policy="insecure")
    store.put("config", b"x")
    assert not (tmp_path / "none").exists()


def test_closed_port_fails_fast(server: SFTPServer) -> None:
    store = SFTPStore("127.0.0.1", _free_port(), "root", "/srv/backup",
                      key_file=server.key_file, known_hosts=server.known_hosts)
    started = time.monotonic()
    with pytest.raises(StoreError) as exc:
        store.get("config")
    assert time.monotonic() - started < 5
    text = _one_line(exc)
    assert text.startswith(f"sftp://root@127.0.0.1:{store.port}/srv/backup: reading config: "
                           "cannot reach the server (Connection refused")


def test_silent_server_times_out(server: SFTPServer) -> None:
    """A port that accepts connections but never speaks SSH fails after ``timeout``."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        store = SFTPStore("127.0.0.1", port, "root", "/x", key_file=server.key_file,
                          known_hosts=server.known_hosts, timeout=1.0)
        started = time.monotonic()
        with pytest.raises(StoreError) as exc:
            store.exists("config")
        assert time.monotonic() - started < 4
    assert "cannot reach the server (no SSH answer" in _one_line(exc)


def test_not_an_ssh_server(tmp_path: Path) -> None:
    """A port that hangs up at once: one line from the CLI, none of paramiko's tracebacks."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()

    def hang_up() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            conn.close()

    threading.Thread(target=hang_up, daemon=True).start()
    port = listener.getsockname()[1]
    try:
        cli = CLI(f"sftp://root@127.0.0.1:{port}/srv/repo",
                  env={"MULTIBACKUP_SFTP_HOST_KEY_POLICY": "insecure"})
        result = cli("snapshots", ok=False, timeout=60)
    finally:
        listener.close()
    assert result.code != 0
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err  # sometimes ": Connection reset by peer" follows
    assert lines[0].startswith(
        f"error: sftp://root@127.0.0.1:{port}/srv/repo: reading config: cannot reach the server "
        f"(127.0.0.1:{port} closed the connection before the SSH greeting")


def test_reconnects_after_the_server_restarts(server: SFTPServer) -> None:
    store = server.store("outage")
    store.put("before", b"1")
    server.stop()
    try:
        with pytest.raises(StoreError) as exc:
            store.get("before")
        assert "cannot reach the server" in _one_line(exc)
    finally:
        server.start()
    # the pooled connection died with the server: the store opens a new one
    assert store.get("before") == b"1"
    store.put("after", b"2")
    server.stop()
    server.start()
    assert store.get("after") == b"2"  # between operations: no error at all
    assert sorted(i.key for i in store.list()) == ["after", "before"]


def test_full_disk_is_storage_full(server: SFTPServer) -> None:
    mount = server.root / "small-disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)],
                      capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root and CAP_SYS_ADMIN)")
    try:
        store = server.store("small-disk")
        store.put("config", b"kept")
        with pytest.raises(StorageFull) as exc:
            store.put("data/00/pack", os.urandom(3 * MiB))
        assert "no space left on the server" in _one_line(exc)
        assert os.listdir(mount / ".tmp") == []  # the partial upload does not keep it full
        assert not store.exists("data/00/pack")
        assert store.get("config") == b"kept"
        store.put("data/00/small", os.urandom(MiB))
    finally:
        server.close_stores()
        subprocess.run(["umount", str(mount)], check=True)


def test_read_only_server_is_permission_denied(tmp_path: Path) -> None:
    """``internal-sftp -R`` (a read-only account) refuses writes with SSH_FX_PERMISSION_DENIED."""
    ro = start_sftp_server(tmp_path, "-R")
    try:
        (ro.root / "repo").mkdir()
        (ro.root / "repo" / "config").write_bytes(b"readable")
        store = ro.store("repo")
        assert store.get("config") == b"readable"
        with pytest.raises(StoreError) as exc:
            store.put("config", b"x")
        assert _one_line(exc).endswith("writing config: permission denied on the server")
        with pytest.raises(StoreError, match="deleting config: permission denied"):
            store.delete("config")
        assert (ro.root / "repo" / "config").read_bytes() == b"readable"
    finally:
        ro.close_stores()
        ro.stop()


def test_repository_round_trip_through_the_store(server: SFTPServer, tmp_path: Path) -> None:
    from multibackup.engine.backup import Archiver
    from multibackup.engine.restore import Restorer
    from multibackup.repository.repository import Repository

    src = make_tree(tmp_path / "src")
    store = server.store("api-repo")
    with Repository.init(store, "pw") as repo, repo.lock(command="backup"):
        repo.load_index()
        snap = Archiver(repo).run([str(src)])
    with Repository.open(server.store("api-repo"), "pw") as repo, repo.lock(command="restore"):
        repo.load_index()
        restored = repo.find_snapshot("latest")
        assert restored.id == snap.id
        summary = Restorer(repo, restored, str(tmp_path / "out")).run()
    assert summary.errors == []
    assert snapshot_of_tree(tmp_path / "out" / str(src).lstrip("/")) == snapshot_of_tree(src)
    assert any((server.root / "api-repo" / "data").rglob("*"))


def test_cli_round_trip_on_an_sftp_location(server: SFTPServer, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", big=False)
    cli = CLI(server.location("cli-repo"), env=server.env())
    cli("init")
    summary = cli("backup", str(src), "--json").json()
    assert summary["files_new"] == 35
    cli("check")
    cli("restore", "latest", "--target", str(tmp_path / "out"))
    assert snapshot_of_tree(tmp_path / "out" / str(src).lstrip("/")) == snapshot_of_tree(src)
    denied = cli("snapshots", ok=False, env={"MULTIBACKUP_SFTP_KEY_FILE": str(
        _keygen(tmp_path / "stranger"))})
    assert denied.code != 0 and "authentication failed" in denied.err
    assert "Traceback" not in denied.err
