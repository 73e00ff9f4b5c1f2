"""EXPOSE specs read as Docker reads them: the ports a spec exposes, or Docker's error."""

from __future__ import annotations

import pytest
from port_specs import SPECS

from lamina.core.dockerfile.ports import PortSpecError, exposed_ports


@pytest.mark.parametrize(("spec", "ports", "error"), SPECS, ids=[s[0] for s in SPECS])
def test_a_spec_exposes_what_docker_exposes_or_fails_as_docker_fails(
    spec: str, ports: list[str] | None, error: str | None
) -> None:
    if error is None:
        assert exposed_ports([spec]) == ports
        return
    with pytest.raises(PortSpecError) as info:
        exposed_ports([spec])
    assert str(info.value) == error


def test_several_specs_expose_each_port_once_and_stop_at_the_first_bad_one() -> None:
    assert exposed_ports(["80", "80/tcp", "81/udp"]) == ["80/tcp", "81/udp"]
    with pytest.raises(PortSpecError, match="Invalid containerPort: abc"):
        exposed_ports(["80", "abc", "80/xyz"])
