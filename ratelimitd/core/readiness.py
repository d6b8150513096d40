"""Readiness as the AND of named components (envoy's health.go), for /readyz and READY=1.

No I/O: the daemon sets components as it starts and stops; http.py reports them.
"""

from __future__ import annotations

__all__ = ("Readiness",)


class Readiness:
    """Readiness as the AND of named components, each ready or not with a reason.

    The daemon sets each component as it starts and stops (envoy's health.go);
    `/readyz` answers 200 only when every component is ready. Components named
    positionally start "not started"; `component=reason` pairs say why, where
    None means ready: `Readiness("socket", config="loading", state=None)`.
    """

    def __init__(self, *components: str, **reasons: str | None) -> None:
        self._not_ready: dict[str, str] = dict.fromkeys(components, "not started")
        for component, reason in reasons.items():
            self[component] = reason

    def set(self, component: str, ok: bool, reason: str = "") -> None:
        """Mark `component` ready, or not ready because of `reason`."""
        if ok:
            self._not_ready.pop(component, None)
        else:
            self._not_ready[component] = reason or "not ready"

    def __setitem__(self, component: str, reason: str | None) -> None:
        """`readiness[component] = None` marks it ready; a string says why it is not."""
        self.set(component, reason is None, reason or "")

    @property
    def ready(self) -> bool:
        return not self._not_ready

    def reasons(self) -> dict[str, str]:
        """The components that are not ready, with why."""
        return dict(self._not_ready)
