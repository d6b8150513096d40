"""ratelimitd: a host-local rate-limit daemon shared by every process on the host."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ratelimitd")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__all__ = ("__version__",)
