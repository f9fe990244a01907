"""GCS resumable sessions (``GcsResumable``) against the GCS emulator: bytes the session
holds are never sent twice, a part cut anywhere continues from the service's count, and
failures are one line without the session URI (which grants writing the object)."""

from __future__ import annotations

import hashlib
import http.client
import os
from urllib.parse import urlsplit

import pytest
from servers_cloud import GcsServer

from multibackup.backends.gcs_resumable import GRANULE, GcsResumable
from multibackup.backends.location import parse_location
from multibackup.errors import ObjectNotFound, StoreError

PART = 4 * GRANULE  # 1 MiB


def _target(gcs: GcsServer, monkeypatch: pytest.MonkeyPatch, prefix: str = "up",
            bucket: str | None = None) -> tuple[GcsResumable, str]:
    for k, v in gcs.env().items():
        monkeypatch.setenv(k, v)
    location = gcs.location(prefix=prefix, bucket=bucket)
    return GcsResumable(parse_location(location), PART), location.split("/")[2]


def _put_raw(session: str, data: bytes, start: int) -> int:
    """Send bytes to a session behind the target's back (as a killed run would have)."""
    url = urlsplit(session)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    try:
        conn.request("PUT", f"{url.path}?{url.query}", body=data,
                     headers={"Content-Range": f"bytes {start}-{start + len(data) - 1}/*"})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def test_held_bytes_are_not_sent_again(gcs: GcsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(3 * PART + 777)
    first, bucket = _target(gcs, monkeypatch)
    session = first.create("obj.bin", "application/x-kept", {"origin": "test"})
    first.upload_part("obj.bin", session, 1, data[:PART])
    # the killed run got half of part 2 into the session (a multiple of 256 KiB, as GCS
    # keeps), and never journalled it
    assert _put_raw(session, data[PART:PART + 2 * GRANULE], PART) == 308

    again, _ = _target(gcs, monkeypatch, bucket=bucket)
    assert again.list_parts("obj.bin", session) == {1: (None, PART)}
    # part 1 is held whole: nothing is sent, yet its MD5 comes back for the journal
    md5 = again.upload_part("obj.bin", session, 1, data[:PART])
    assert md5 == hashlib.md5(data[:PART]).hexdigest()
    # part 2 continues from the byte the service asks for; were the held half sent again,
    # the emulator would refuse the range
    again.upload_part("obj.bin", session, 2, data[PART:2 * PART], total=len(data))
    again.upload_part("obj.bin", session, 3, data[2 * PART:3 * PART], total=len(data))
    assert "up/obj.bin" not in gcs.names(bucket)  # nothing visible before the last byte
    # the last part (not a multiple of 256 KiB) carries the size and completes the object
    again.upload_part("obj.bin", session, 4, data[3 * PART:], total=len(data))
    assert gcs.read(bucket, "up/obj.bin") == data
    assert again.complete("obj.bin", session, []) == gcs.resource(bucket, "up/obj.bin")["etag"]
    resource = gcs.resource(bucket, "up/obj.bin")
    assert (resource["contentType"], resource["metadata"]) == ("application/x-kept",
                                                               {"origin": "test"})


def test_killed_after_the_last_part(gcs: GcsServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last part went in (the object exists) but the run died before it journalled
    that: a rerun finds every part held and completes without sending a byte."""
    data = os.urandom(2 * PART + 99)
    first, bucket = _target(gcs, monkeypatch)
    session = first.create("done.bin")
    for n in (1, 2, 3):
        first.upload_part("done.bin", session, n, data[(n - 1) * PART:n * PART], total=len(data))
    etag = gcs.resource(bucket, "up/done.bin")["etag"]
    again, _ = _target(gcs, monkeypatch, bucket=bucket)
    assert again.list_parts("done.bin", session) == {1: (None, PART), 2: (None, PART), 3: (None, 99)}
    assert again.upload_part("done.bin", session, 3, data[2 * PART:], total=len(data))
    assert again.complete("done.bin", session, []) == etag


def test_a_gap_is_refused_not_papered_over(gcs: GcsServer,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    target, bucket = _target(gcs, monkeypatch)
    session = target.create("gap.bin")
    with pytest.raises(StoreError, match="holds 0 bytes, the part starts at"):
        target.upload_part("gap.bin", session, 2, os.urandom(PART))
    assert "gap.bin" not in " ".join(gcs.names(bucket))


def test_errors_are_one_line_without_the_session(gcs: GcsServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    target, bucket = _target(gcs, monkeypatch)
    session = target.create("x.bin")
    gone = session.replace("upload_id=", "upload_id=nothing-")
    with pytest.raises(ObjectNotFound) as info:
        target.list_parts("x.bin", gone)
    assert "\n" not in str(info.value) and "upload_id" not in str(info.value)
    assert "session is gone" in str(info.value)

    missing = GcsResumable(parse_location("gs://no-such-bucket-7f/p"), PART)
    with pytest.raises(StoreError) as info:
        missing.create("y.bin")
    assert "\n" not in str(info.value) and str(info.value).startswith("gs://no-such-bucket-7f/p")

    monkeypatch.setenv("MULTIBACKUP_GCS_ENDPOINT", "http://127.0.0.1:9")
    unreachable = GcsResumable(parse_location(f"gs://{bucket}/p"), PART)
    with pytest.raises(StoreError, match="cannot reach the server"):
        unreachable.create("z.bin")
    with pytest.raises(ValueError):
        GcsResumable(parse_location(f"gs://{bucket}/p"), PART + 1)

    import base64
    import json

    odd = {"type": "external_account", "audience": "x", "subject_token_type": "y"}
    monkeypatch.setenv("MULTIBACKUP_GCS_CREDENTIAL",
                       base64.b64encode(json.dumps(odd).encode()).decode())
    with pytest.raises(StoreError, match="credential type 'external_account' is not supported"):
        GcsResumable(parse_location(f"gs://{bucket}/p"), PART).create("w.bin")


_TOKEN_SERVER = r"""
import http.server, json, sys, urllib.parse
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        form = urllib.parse.parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        sys.stdout.write(json.dumps(form) + "\n"); sys.stdout.flush()
        ok = sys.argv[2] == "ok"
        body = json.dumps({"access_token": "tok-123", "expires_in": 3600, "token_type": "Bearer"}
                          if ok else {"error": "invalid_grant", "error_description": "bad key"})
        self.send_response(200 if ok else 400)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())
    def log_message(self, *args):
        pass
http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
"""


@pytest.mark.parametrize("answer", ["ok", "refused"])
def test_service_account_signs_for_its_token(answer: str, gcs: GcsServer,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A service account key signs a JWT for a token at its token_uri (Google's OAuth
    server cannot run here, so a stand-in answers); a refusal is one line without the
    key."""
    import base64
    import json
    import socket
    import subprocess
    import sys
    import time

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding, rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption()).decode()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    account = {"type": "service_account", "project_id": "p", "private_key_id": "kid-1",
               "private_key": pem, "client_email": "backup@p.iam.gserviceaccount.com",
               "token_uri": f"http://127.0.0.1:{port}/token"}
    proc = subprocess.Popen([sys.executable, "-c", _TOKEN_SERVER, str(port), answer],
                            stdout=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        monkeypatch.setenv("MULTIBACKUP_GCS_CREDENTIAL",
                           base64.b64encode(json.dumps(account).encode()).decode())
        target, bucket = _target(gcs, monkeypatch)
        if answer == "refused":
            with pytest.raises(StoreError) as info:
                target.create("obj.bin")
            message = str(info.value)
            assert "\n" not in message and "PRIVATE KEY" not in message
            assert message.startswith(f"gs://{bucket}/up: starting an upload of obj.bin")
            return
        data = os.urandom(PART + 5)
        session = target.create("obj.bin")
        target.upload_part("obj.bin", session, 1, data[:PART], total=len(data))
        target.upload_part("obj.bin", session, 2, data[PART:], total=len(data))
        target.complete("obj.bin", session, [])
        assert gcs.read(bucket, "up/obj.bin") == data
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=10)
    forms = [json.loads(line) for line in out.splitlines()]
    assert len(forms) == 1  # one token, reused for every request
    assert forms[0]["grant_type"] == ["urn:ietf:params:oauth:grant-type:jwt-bearer"]
    header, claims, signature = forms[0]["assertion"][0].split(".")

    def unb64(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    key.public_key().verify(unb64(signature), f"{header}.{claims}".encode(),
                            padding.PKCS1v15(), hashes.SHA256())
    claims_doc = json.loads(unb64(claims))
    assert claims_doc["iss"] == account["client_email"]
    assert claims_doc["aud"] == "https://oauth2.googleapis.com/token"  # always Google's
    assert "devstorage.read_write" in claims_doc["scope"]
