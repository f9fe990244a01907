"""Named S3-compatible providers: endpoint, region and addressing rules in one place.

Most clouds speak the S3 API; what differs is how the endpoint is built from the region,
whether the region is needed at all, and whether buckets must be addressed as a host name
(virtual-hosted style) or may be a path. Getting any of these wrong gives opaque 301/403
errors from the provider, so the rules are kept here rather than left to each user.

======== ========================================== ================= ==========
name     endpoint                                   region example    addressing
======== ========================================== ================= ==========
aws      ``https://s3.<region>.amazonaws.com``      ``eu-west-1``     virtual
         (``.amazonaws.com.cn`` for ``cn-*``)
oss      ``https://oss-<region>.aliyuncs.com``      ``cn-hangzhou``   virtual (required:
         (Alibaba; ``oss-`` prefix on the region                      path style is
         is accepted and dropped)                                     refused by OSS)
cos      ``https://cos.<region>.myqcloud.com``      ``ap-guangzhou``  virtual
         (Tencent; bucket names end in ``-<appid>``)
qiniu    ``https://s3.<region>.qiniucs.com``        ``cn-east-1``     virtual
         (Kodo; cn-east-1, cn-east-2, cn-north-1,
         cn-south-1, us-north-1, ap-southeast-1 ...)
obs      ``https://obs.<region>.myhuaweicloud.com`` ``cn-north-4``    virtual
         (Huawei)
b2       ``https://s3.<region>.backblazeb2.com``    ``us-west-004``   virtual
         (Backblaze)
wasabi   ``https://s3.<region>.wasabisys.com``      ``us-east-1``     virtual
r2       ``https://<account_id>.r2.cloudflarestorage.com``  ``auto``  path (the bucket
         (Cloudflare; account id from                                 host would be two
         ``MULTIBACKUP_R2_ACCOUNT_ID``)                               levels deep)
minio    endpoint required                          ``us-east-1``     path
seaweedfs endpoint required                         ``us-east-1``     path
s3       generic: optional endpoint; without one    ``us-east-1``     path with an
         it is AWS (``s3://`` locations)                              endpoint, else virtual
======== ========================================== ================= ==========

An explicit endpoint always wins over the pattern (internal or accelerated endpoints,
custom domains: Alibaba requires a custom domain for new accounts in mainland China).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from multibackup.backends.location import Location
from multibackup.errors import UsageError


@dataclass(frozen=True)
class Provider:
    """How to reach one S3-compatible provider."""

    description: str
    #: ``{region}`` / ``{account_id}`` are filled in; empty: the user must give an endpoint
    endpoint: str
    addressing: str  # "virtual" or "path"
    #: example shown when a required region is missing; empty: the region is optional
    example_region: str = ""
    #: a fixed signing region (R2 signs with "auto")
    fixed_region: str = ""
    #: True when path-style requests are refused by the provider
    virtual_only: bool = False


_TABLE: dict[str, Provider] = {
    "aws": Provider("Amazon S3", "https://s3.{region}.amazonaws.com", "virtual", "eu-west-1"),
    "oss": Provider("Alibaba Cloud OSS", "https://oss-{region}.aliyuncs.com", "virtual",
                    "cn-hangzhou", virtual_only=True),
    "cos": Provider("Tencent Cloud COS", "https://cos.{region}.myqcloud.com", "virtual",
                    "ap-guangzhou"),
    "qiniu": Provider("Qiniu Kodo", "https://s3.{region}.qiniucs.com", "virtual", "cn-east-1"),
    "obs": Provider("Huawei Cloud OBS", "https://obs.{region}.myhuaweicloud.com", "virtual",
                    "cn-north-4"),
    "b2": Provider("Backblaze B2", "https://s3.{region}.backblazeb2.com", "virtual",
                   "us-west-004"),
    "wasabi": Provider("Wasabi", "https://s3.{region}.wasabisys.com", "virtual", "us-east-1"),
    "r2": Provider("Cloudflare R2", "https://{account_id}.r2.cloudflarestorage.com", "path",
                   fixed_region="auto"),
    "minio": Provider("MinIO (endpoint required)", "", "path"),
    "seaweedfs": Provider("SeaweedFS (endpoint required)", "", "path"),
    "s3": Provider("any S3-compatible service (endpoint optional: AWS without one)", "", "path"),
}

#: provider name -> one-line description, for help output
PROVIDERS: dict[str, str] = {name: p.description for name, p in _TABLE.items()}

_DEFAULT_REGION = "us-east-1"


def provider_location(provider: str, bucket: str, prefix: str = "", region: str | None = None,
                      endpoint: str | None = None, *, addressing: str | None = None,
                      account_id: str | None = None) -> Location:
    """The Location of ``bucket/prefix`` at a named provider, endpoint and region resolved.

    Nothing is read from the environment here (the caller decides where region and
    endpoint come from), except that ``r2`` falls back to ``MULTIBACKUP_R2_ACCOUNT_ID``.
    """
    spec = _TABLE.get(provider)
    if spec is None:
        raise UsageError(f"unknown S3 provider {provider!r}: use one of {', '.join(_TABLE)}")
    if not bucket:
        raise UsageError(f"{provider}: no bucket given (expected {provider}://bucket/prefix)")
    if "/" in bucket:
        raise UsageError(f"{provider}: invalid bucket name {bucket!r}")
    endpoint = (endpoint or "").rstrip("/")
    region = (region or "").strip()
    if provider == "oss" and region.startswith("oss-"):
        region = region[len("oss-"):]
    if spec.fixed_region:
        region = region or spec.fixed_region
    elif spec.example_region and not region:
        raise UsageError(f"{provider} needs a region: use --s3-region or AWS_REGION "
                         f"(e.g. {spec.example_region})")
    region = region or _DEFAULT_REGION
    if not endpoint and spec.endpoint:
        if provider == "r2":
            account_id = account_id or os.environ.get("MULTIBACKUP_R2_ACCOUNT_ID", "")
            if not account_id:
                raise UsageError("r2 needs the Cloudflare account id: set "
                                 "MULTIBACKUP_R2_ACCOUNT_ID or give an endpoint")
        endpoint = spec.endpoint.format(region=region, account_id=account_id)
        if provider == "aws" and region.startswith("cn-"):
            endpoint += ".cn"
    if not endpoint and provider in ("minio", "seaweedfs"):
        raise UsageError(f"{provider} needs an endpoint: use --s3-endpoint or AWS_ENDPOINT_URL "
                         f"(e.g. http://127.0.0.1:9000)")
    if not endpoint.startswith(("http://", "https://")) and endpoint:
        raise UsageError(f"{provider}: invalid endpoint {endpoint!r}: expected http(s)://host")
    default_addressing = spec.addressing
    if provider == "s3" and not endpoint:
        default_addressing = "virtual"  # AWS itself
    addressing = addressing or default_addressing
    if addressing not in ("path", "virtual"):
        raise UsageError(f"invalid S3 addressing {addressing!r}: use 'path' or 'virtual'")
    if spec.virtual_only and addressing != "virtual":
        raise UsageError(f"{provider} only accepts virtual-hosted addressing")
    return Location("s3", prefix.strip("/"), bucket=bucket, endpoint=endpoint,
                    options={"region": region, "addressing": addressing, "provider": provider})
