"""The build context: which files a build may see."""

from __future__ import annotations
