"""Each bucket's own headers (its API key), checked so no request goes out without one.

Pure. The daemon only knows bucket names; an integration maps each name to the headers
that carry that bucket's key. A bucket with no headers, or one the daemon grants that the
map does not name, would send the request without a key: the provider answers 401, and
the daemon then takes that key out of rotation for every process on the host.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ("BucketHeaders", "MissingBucketHeaders", "check_bucket_headers", "header_names", "headers_for")

#: provider -> bucket -> headers to set for that bucket.
BucketHeaders = Mapping[str, Mapping[str, Mapping[str, str]]]


class MissingBucketHeaders(LookupError):
    """The daemon granted a bucket that `bucket_headers` gives no headers for."""


def check_bucket_headers(bucket_headers: BucketHeaders) -> None:
    """:raises ValueError: a bucket is given no headers."""
    for provider, buckets in bucket_headers.items():
        for bucket, headers in buckets.items():
            if not headers:
                raise ValueError(
                    f"bucket_headers[{provider!r}][{bucket!r}]: no headers (no API key) given; "
                    "its requests would go out without a key"
                )


def header_names(bucket_headers: BucketHeaders) -> dict[str, frozenset[str]]:
    """Per provider, every header name its buckets set: each is taken off a request before the
    granted bucket's own go on (no key of another bucket may stay on a retried request)."""
    return {
        provider: frozenset(name for headers in per_bucket.values() for name in headers)
        for provider, per_bucket in bucket_headers.items()
    }


def headers_for(provider: str, per_bucket: Mapping[str, Mapping[str, str]], bucket: str) -> Mapping[str, str]:
    """The headers of `bucket` (none when the provider's buckets carry no headers at all).

    :raises MissingBucketHeaders: the provider's buckets have headers, but not this one.
    """
    if not per_bucket:
        return {}
    headers = per_bucket.get(bucket)
    if headers is None:
        raise MissingBucketHeaders(
            f"bucket_headers[{provider!r}] has no headers for bucket {bucket!r}, which the daemon "
            f"granted (known: {', '.join(per_bucket)}); the request was not sent without its key"
        )
    return headers
