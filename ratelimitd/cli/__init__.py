"""The `ratelimitd` command line: `serve`, `check-config`, `status`, `acquire`, `report`, `reset`, …"""

from ratelimitd.cli.main import main

__all__ = ("main",)
