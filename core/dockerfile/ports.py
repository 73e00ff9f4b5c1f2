"""``EXPOSE`` port specs, read the way Docker reads them.

Both of Docker's builders hand EXPOSE's words (after variable expansion) to
go-connections' ``nat.ParsePortSpecs``: a spec is ``[[ip:]hostPort:]containerPort[/proto]``,
ports and ranges are 16-bit decimals, the protocol is tcp, udp or sctp in any case, and
a range exposes each of its ports. The image config gets the exposed ports as
``<port>/<proto>``; anything else fails the build with nat's own words, checked on
Docker 20.10 (``Invalid containerPort: abc``, ``Invalid proto: xyz``, ...).
"""

from __future__ import annotations

import ipaddress

PROTOCOLS = ("tcp", "udp", "sctp")


class PortSpecError(ValueError):
    """A port spec Docker refuses; ``str()`` is Docker's message."""


def exposed_ports(specs: list[str]) -> list[str]:
    """The ``ExposedPorts`` keys that ``specs`` expose, in the order they appear.

    Args:
        specs: EXPOSE's words, expanded.

    Raises:
        PortSpecError: a spec Docker refuses, with Docker's message.
    """
    out: list[str] = []
    for spec in specs:
        for port in _parse_spec(spec):
            if port not in out:
                out.append(port)
    return out


def _parse_spec(raw: str) -> list[str]:
    ip, host_port, container = _split_parts(raw)
    proto, container = _split_proto_port(container)
    if ip:
        ip = _host_of(ip)
    if not container:
        raise PortSpecError(f"No port specified: {raw}<empty>")
    start, end = _range(container, f"Invalid containerPort: {container}")
    if host_port:
        host_start, host_end = _range(host_port, f"Invalid hostPort: {host_port}")
        if end - start != host_end - host_start and end != start:
            # A host range may map onto one container port, not the other way round.
            raise PortSpecError(
                "Invalid ranges specified for container and host Ports: "
                f"{container} and {host_port}"
            )
    if proto.lower() not in PROTOCOLS:
        raise PortSpecError(f"Invalid proto: {proto}")
    return [f"{port}/{proto.lower()}" for port in range(start, end + 1)]


def _split_parts(raw: str) -> tuple[str, str, str]:
    """(ip, host port, container port) as nat's ``splitParts`` cuts them at colons."""
    parts = raw.split(":")
    if len(parts) == 1:
        return "", "", parts[0]
    if len(parts) == 2:
        return "", parts[0], parts[1]
    return ":".join(parts[:-2]), parts[-2], parts[-1]


def _split_proto_port(raw: str) -> tuple[str, str]:
    """(protocol, port) as nat's ``SplitProtoPort``: ``80`` and ``80/`` are tcp."""
    parts = raw.split("/")
    if not raw or not parts[0]:
        return "", ""
    if len(parts) == 1 or not parts[1]:
        return "tcp", parts[0]
    return parts[1], parts[0]


def _host_of(ip: str) -> str:
    """The IP of a spec, checked as nat checks it (Go's ``net.SplitHostPort`` of
    ``ip + ":"``, then ``net.ParseIP``)."""
    hostport = ip + ":"
    if ip.startswith("["):
        end = hostport.find("]")
        if end < 0:
            why = "missing ']' in address"
        elif end + 1 == len(hostport) - 1:
            why = ""
        else:
            why = "too many colons in address" if hostport[end + 1] == ":" else "missing port"
        if why:
            raise PortSpecError(f"Invalid ip address {ip}: address {hostport}: {why}")
        host = hostport[1:end]
    else:
        host = ip
        if ":" in host:
            raise PortSpecError(
                f"Invalid ip address {ip}: address {hostport}: too many colons in address"
            )
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise PortSpecError(f"Invalid ip address: {host}") from None
    return host


def _range(text: str, message: str) -> tuple[int, int]:
    """``80`` or ``8000-8010`` as nat's ``ParsePortRange`` reads it (16-bit decimals,
    end not below start); ``message`` is the error Docker gives for this part."""
    first, sep, last = text.partition("-")
    start = _uint16(first, message)
    end = _uint16(last.split("-")[0], message) if sep else start
    if end < start:
        raise PortSpecError(message)
    return start, end


def _uint16(text: str, message: str) -> int:
    # Go's strconv.ParseUint(s, 10, 16): ASCII digits only, no sign, at most 65535.
    if not text or not text.isascii() or not text.isdigit() or int(text) > 0xFFFF:
        raise PortSpecError(message)
    return int(text)
