"""EXPOSE specs and what Docker 20.10's builders make of them (measured on a dockerd).

``(spec, exposed ports or None, Docker's error or None)``: shared by the unit test of
``lamina.core.dockerfile.ports`` and the Docker test that checks each row against the
daemon, so the table cannot drift from what Docker does.
"""

from __future__ import annotations

SPECS: list[tuple[str, list[str] | None, str | None]] = [
    ("80", ["80/tcp"], None),
    ("80/udp", ["80/udp"], None),
    ("80/TCP", ["80/tcp"], None),
    ("80/", ["80/tcp"], None),
    ("80/sctp", ["80/sctp"], None),
    ("8080-8081/udp", ["8080/udp", "8081/udp"], None),
    ("0", ["0/tcp"], None),
    ("65535", ["65535/tcp"], None),
    (":80", ["80/tcp"], None),
    ("80:90", ["90/tcp"], None),
    ("80-81:90", ["90/tcp"], None),
    ("1.2.3.4:81:81", ["81/tcp"], None),
    ("[::1]:80:80", ["80/tcp"], None),
    ("abc", None, "Invalid containerPort: abc"),
    ("abc/tcp", None, "Invalid containerPort: abc"),
    ("80/xyz", None, "Invalid proto: xyz"),
    ("80-70", None, "Invalid containerPort: 80-70"),
    ("80-70/udp", None, "Invalid containerPort: 80-70"),
    ("80-", None, "Invalid containerPort: 80-"),
    ("80-abc", None, "Invalid containerPort: 80-abc"),
    ("-1", None, "Invalid containerPort: -1"),
    ("65536", None, "Invalid containerPort: 65536"),
    ("/tcp", None, "No port specified: /tcp<empty>"),
    ("1.2.3.4:80", None, "Invalid hostPort: 1.2.3.4"),
    ("80:90-91", None, "Invalid ranges specified for container and host Ports: 90-91 and 80"),
    ("999.1.1.1:80:80", None, "Invalid ip address: 999.1.1.1"),
    ("[zz]:80:80", None, "Invalid ip address: zz"),
    ("a:b:c:80", None, "Invalid ip address a:b: address a:b:: too many colons in address"),
]
