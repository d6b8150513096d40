"""Logging set-up: one line per event, level from config or `RATELIMITD_LOG_LEVEL`."""

from __future__ import annotations

import logging
import sys

__all__ = ("setup_logging",)


def setup_logging(level: str) -> None:
    # Under systemd the journal adds its own timestamp; a plain stderr line is what it wants.
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
