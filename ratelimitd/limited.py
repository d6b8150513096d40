"""`limited`: any function or block under permits (public path of `ratelimitd.integrations.limited`)."""

from ratelimitd.integrations.limited import Call, classify_default, limited

__all__ = ("Call", "classify_default", "limited")
