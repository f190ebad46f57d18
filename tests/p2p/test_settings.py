"""The values a network is built from."""

from __future__ import annotations

import pytest

from p2p.settings import PeerSettings


def test_peer_settings_defaults_and_a_bootstrap_list_taken_as_a_tuple() -> None:
    assert PeerSettings() == PeerSettings(host="127.0.0.1", port=0, bootstrap=(), max_peers=32, advertise_addr=None)
    settings = PeerSettings(bootstrap=["127.0.0.1:1", "127.0.0.1:2"])  # type: ignore[arg-type]
    assert settings.bootstrap == ("127.0.0.1:1", "127.0.0.1:2")


@pytest.mark.parametrize(
    ("settings", "advertised"),
    [
        (PeerSettings(), "127.0.0.1:26656"),
        (PeerSettings(host="::1"), "[::1]:26656"),
        (PeerSettings(host="0.0.0.0"), ""),  # every interface: peers cannot be told which
        (PeerSettings(host="0.0.0.0", advertise_addr="node.example:7000"), "node.example:7000"),
        (PeerSettings(advertise_addr=""), ""),  # explicitly nothing
    ],
    ids=["loopback", "ipv6", "any", "given", "none"],
)
def test_the_address_to_advertise(settings: PeerSettings, advertised: str) -> None:
    assert settings.get_advertise_addr(26656) == advertised
