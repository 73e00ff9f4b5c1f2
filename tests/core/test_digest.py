"""Digests and chainIDs, against the OCI image-spec vectors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lamina.core.digest import chain_ids, hex_of, is_digest, sha256_bytes, short
from lamina.core.errors import StoreError

HEX = "a" * 64


def _cases(conformance: Path) -> list[dict[str, object]]:
    doc = json.loads((conformance / "images" / "oci-image-spec-chainid.json").read_text())
    return list(doc["cases"])


def test_chain_ids_match_oci_vectors(conformance: Path) -> None:
    cases = _cases(conformance)
    assert len(cases) >= 4
    for case in cases:
        expected = case["expect_chain_ids"] or []
        assert chain_ids(case["input"]) == expected, case["name"]  # type: ignore[arg-type]


def test_chain_id_formula_by_hand() -> None:
    a, b, c = (sha256_bytes(x) for x in (b"a", b"b", b"c"))
    ab = sha256_bytes(f"{a} {b}".encode())
    assert chain_ids([a, b, c]) == [a, ab, sha256_bytes(f"{ab} {c}".encode())]


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        (f"sha256:{HEX}", True),
        (f"sha256:{HEX.upper()}", False),
        (f"sha256:{HEX[:-1]}", False),
        (f"sha512:{HEX}", False),
        ("sha256:../../etc/passwd", False),
        (HEX, False),
        (f"sha256:{HEX}\n", False),
    ],
)
def test_is_digest_and_hex_of(value: str, ok: bool) -> None:
    assert is_digest(value) is ok
    if ok:
        assert hex_of(value) == HEX
    else:
        with pytest.raises(StoreError, match="malformed digest"):
            hex_of(value)


def test_sha256_bytes_and_short() -> None:
    d = sha256_bytes(b"")
    assert d == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert short(d) == "e3b0c44298fc"
