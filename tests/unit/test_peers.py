"""Whom a provider trusts and which untrusted peer holds which permit (pure core)."""

from __future__ import annotations

import pytest

from ratelimitd.core.peers import Peer, PermitOwners, Trust

ALICE = Peer(pid=10, uid=1000, gid=1000, groups=frozenset({1000, 27}))


@pytest.mark.parametrize(
    ("trust", "allowed"),
    [
        (Trust(), False),
        (Trust(uids=frozenset({1000})), True),
        (Trust(uids=frozenset({1001})), False),
        (Trust(gids=frozenset({1000})), True),  # primary group
        (Trust(gids=frozenset({27})), True),  # supplementary group
        (Trust(gids=frozenset({28})), False),
    ],
)
def test_trust_by_uid_primary_or_supplementary_group(trust: Trust, allowed: bool) -> None:
    assert trust.allows(ALICE) is allowed


def test_a_permit_is_held_by_the_uid_it_was_granted_to_in_its_bucket() -> None:
    owners = PermitOwners()
    owners.record("p", "default", 7, 1000)
    assert owners.held_by("p", "default", 7, 1000)
    assert not owners.held_by("p", "default", 7, 1001)  # another user echoing it
    assert not owners.held_by("p", "key-b", 7, 1000)  # permit ids are per bucket
    assert not owners.held_by("q", "default", 7, 1000)
    assert not owners.held_by("p", "default", None, 1000)  # no permit echoed


def test_the_oldest_permits_are_forgotten_first() -> None:
    owners = PermitOwners(capacity=3)
    for permit in range(1, 6):
        owners.record("p", "default", permit, 1000)
    assert len(owners) == 3
    assert [owners.held_by("p", "default", permit, 1000) for permit in range(1, 6)] == [
        False,
        False,
        True,
        True,
        True,
    ]
