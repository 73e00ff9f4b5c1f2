"""Dockerfiles: BuildKit-compatible parsing, variable expansion and typed instructions."""

from __future__ import annotations
