"""S3 requests signed and sent by hand, for the bytes-heavy calls of a migration.

A part upload through boto3 costs more client CPU than the bytes it moves justify: the
body is wrapped in a file object and sent in 8 KiB writes, every call walks botocore's
event and parsing machinery, and building the client takes a third of a second before the
first request. On two cores, shared with the server, that CPU is time. Here each request
is signed with AWS Signature Version 4 (the payload unsigned, as boto3 is told to do:
each body carries its own Content-MD5 or CRC32C, which the server checks) and sent
through urllib3 in one write.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import random
import threading
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlsplit
from xml.etree import ElementTree

UNSIGNED = "UNSIGNED-PAYLOAD"
#: statuses worth another try: throttling and the server's own trouble
RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
ATTEMPTS = 5


@dataclass(frozen=True)
class Reply:
    """A response: status, headers (lower-case names) and body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def error(self) -> tuple[str, str]:
        """(code, message) of an S3 error reply; a bodiless one (HEAD) gets its status."""
        code = message = ""
        if self.body:
            try:
                root = ElementTree.fromstring(self.body)
                code = root.findtext("{*}Code") or ""
                message = root.findtext("{*}Message") or ""
            except ElementTree.ParseError:
                message = self.body[:200].decode("utf-8", "replace")
        if not code:
            code = {404: "NotFound", 403: "Forbidden", 412: "PreconditionFailed"}.get(
                self.status, str(self.status))
        return code, message


class S3Error(Exception):
    """A request that failed: the S3 error code and message (never a credential)."""

    def __init__(self, code: str, message: str, status: int = 0) -> None:
        super().__init__(f"{code}: {message}" if message else code)
        self.code, self.message, self.status = code, message, status


def _encode(text: str, safe: str) -> str:
    return quote(text, safe=safe)  # RFC 3986 unreserved characters stay, as SigV4 wants


class S3Rest:
    """Signed requests to one bucket (the options of ``location.operator_config``)."""

    def __init__(self, options: Mapping[str, str]) -> None:
        self.bucket = options["bucket"]
        self.region = options["region"]
        self._key_id = options.get("access_key_id", "")
        self._secret = options.get("secret_access_key", "")
        self._token = options.get("session_token", "")
        self._anonymous = options.get("allow_anonymous") == "true" or not self._key_id
        endpoint = options.get("endpoint") or f"https://s3.{self.region}.amazonaws.com"
        parts = urlsplit(endpoint)
        self.scheme = parts.scheme or "https"
        base = parts.path.rstrip("/")
        if options.get("enable_virtual_host_style") == "true":
            self._host, self._prefix = f"{self.bucket}.{parts.netloc}", base
        else:
            self._host, self._prefix = parts.netloc, f"{base}/{self.bucket}"
        self._keys: dict[str, bytes] = {}
        self._pool: Any = None
        self._making = threading.Lock()

    # ---- signing (AWS Signature Version 4) -------------------------------------------

    def _signing_key(self, day: str) -> bytes:
        key = self._keys.get(day)
        if key is None:
            key = ("AWS4" + self._secret).encode()
            for part in (day, self.region, "s3", "aws4_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
            self._keys = {day: key}
        return key

    def _sign(self, method: str, path: str, query: str, headers: dict[str, str]) -> None:
        """Add the date, token and Authorization headers to ``headers``."""
        stamp = _stamp()
        headers["x-amz-date"] = stamp
        if self._token:
            headers["x-amz-security-token"] = self._token
        names = sorted(headers)
        canonical_headers = "".join(f"{n}:{' '.join(headers[n].split())}\n" for n in names)
        signed = ";".join(names)
        request = "\n".join((method, path, query, canonical_headers, signed,
                             headers["x-amz-content-sha256"]))
        scope = f"{stamp[:8]}/{self.region}/s3/aws4_request"
        to_sign = "\n".join(("AWS4-HMAC-SHA256", stamp, scope,
                             hashlib.sha256(request.encode("latin-1")).hexdigest()))
        signature = hmac.new(self._signing_key(stamp[:8]), to_sign.encode(),
                             hashlib.sha256).hexdigest()
        headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={self._key_id}/{scope}, "
                                    f"SignedHeaders={signed}, Signature={signature}")

    def signed(self, method: str, key: str = "", query: Mapping[str, str] | None = None,
               headers: Mapping[str, str] | None = None,
               payload: str = UNSIGNED) -> tuple[str, dict[str, str]]:
        """The URL of ``key`` below the bucket and the request's headers (lower-case
        names), Host and Authorization included: what any HTTP client then sends as is.
        ``payload`` is the body's SHA-256 in hex, or UNSIGNED."""
        path = _encode(f"{self._prefix}/{key}", "/~")
        items = sorted((_encode(k, "~"), _encode(v, "~")) for k, v in (query or {}).items())
        canonical_query = "&".join(f"{k}={v}" for k, v in items)
        url = f"{self.scheme}://{self._host}{path}" + (
            f"?{canonical_query}" if canonical_query else "")
        sent = {k.lower(): str(v) for k, v in (headers or {}).items()}
        sent["host"] = self._host
        sent["x-amz-content-sha256"] = payload
        if not self._anonymous:
            self._sign(method, path, canonical_query, sent)
        return url, sent

    # ---- sending ----------------------------------------------------------------------

    @property
    def _http(self) -> Any:
        with self._making:
            if self._pool is None:
                self._pool = _pool(self.scheme, self._host)
            return self._pool

    def request(self, method: str, key: str = "", query: Mapping[str, str] | None = None,
                headers: Mapping[str, str] | None = None, body: bytes | memoryview = b"",
                sign_body: bool = False, into: memoryview | None = None) -> Reply:
        """One request for ``key`` below the bucket, retried on throttling, server errors
        and broken connections (every call made through here may be repeated). A reply
        with an error status is returned, not raised: the caller names the action.

        ``into``: a GET's body goes straight into this buffer, which it must fill exactly
        (a ranged read of its length); the reply's body is then empty. No bytes object
        is made for it: a part's buffer is reused, and 8 MiB of fresh memory per part
        costs more CPU in page faults than the copy itself.
        """
        payload = hashlib.sha256(body).hexdigest() if sign_body else UNSIGNED
        delay = 0.25
        for attempt in range(1, ATTEMPTS + 1):
            # signed anew each time (the date moves); the Host is signed, and urllib3 then
            # sends it as it is
            url, sent = self.signed(method, key, query, headers, payload)
            try:
                r = self._http.urlopen(method, url, body=body or None, headers=sent,
                                       retries=False, redirect=False,
                                       preload_content=into is None)
                if into is not None and r.status in (200, 206):
                    _read_into(r, into)
                    data = b""
                else:
                    data = r.data if into is None else r.read()
                    if into is not None:
                        r.release_conn()
            except Exception as exc:
                if attempt == ATTEMPTS:
                    raise S3Error("ConnectionError",
                                  f"{self._host}: {_reason(exc)}") from None
            else:
                reply = Reply(r.status, {k.lower(): v for k, v in r.headers.items()}, data)
                if r.status not in RETRY_STATUS or attempt == ATTEMPTS:
                    return reply
            time.sleep(delay * (0.5 + random.random()))
            delay *= 2
        raise AssertionError("unreachable")


_stamps: tuple[int, str] = (0, "")


def _stamp() -> str:
    """The request time as SigV4 wants it, formatted once a second (not per request)."""
    global _stamps
    now = int(time.time())
    second, text = _stamps
    if second != now:
        text = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(now))
        _stamps = (now, text)
    return text


def _read_into(response: Any, into: memoryview) -> None:
    """Fill ``into`` with the body of ``response`` (urllib3's, not preloaded), read from
    the underlying http.client response without an intermediate bytes object; a body of
    another length is an error (and the connection is dropped, not reused)."""
    raw = getattr(response, "_fp", None)
    done = 0
    try:
        if raw is None or not hasattr(raw, "readinto"):  # another urllib3: read and copy
            data = response.read(len(into) + 1)
            into[:len(data)] = data[:len(into)]
            done = len(data)
        else:
            while done < len(into):
                got = raw.readinto(into[done:])
                if not got:
                    break
                done += got
            if done == len(into) and raw.read(1):
                done += 1
    except BaseException:
        response.close()
        raise
    if done != len(into):
        response.close()
        raise OSError(f"the reply's body has {'more' if done > len(into) else 'fewer'} bytes "
                      f"than the {len(into)} asked for")
    response.release_conn()


def _reason(exc: Exception) -> str:
    """A short cause of a connection failure, without the request's URL or headers."""
    inner = getattr(exc, "reason", None) or exc
    text = " ".join(str(inner).split())
    return text.split(": ", 1)[-1][:200] if ": " in text else text[:200] or type(exc).__name__


def ca_bundle() -> str | None:
    """The certificates a TLS endpoint is checked against: AWS_CA_BUNDLE (as boto3 takes
    it), else certifi's, else the HTTP library's own default (None)."""
    bundle = os.environ.get("AWS_CA_BUNDLE")
    if not bundle:
        try:
            import certifi

            bundle = certifi.where()
        except ImportError:
            bundle = None
    return bundle


def _pool(scheme: str, host: str) -> Any:
    """A urllib3 pool for the endpoint: the proxy from the environment where one applies
    (as boto3 and OpenDAL take it), certificates from AWS_CA_BUNDLE or certifi."""
    import urllib3

    kwargs: dict[str, Any] = {"maxsize": 32, "block": False,
                              "timeout": urllib3.Timeout(connect=30, read=120)}
    if scheme == "https":
        kwargs.update(cert_reqs="CERT_REQUIRED", ca_certs=ca_bundle())
    proxy = urllib.request.getproxies().get(scheme)
    if proxy and not urllib.request.proxy_bypass(host.rsplit(":", 1)[0]):
        return urllib3.ProxyManager(proxy, **kwargs)
    return urllib3.PoolManager(**kwargs)
