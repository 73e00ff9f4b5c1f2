"""lamina's core: the public API, everything a front end may import.

Front ends (the app and the CLI in ``lamina.tui``) import from here and nowhere else
in the core::

    from lamina.core import LocalStore, PruneRequest, open_engine

Names resolve on first use (PEP 562), so ``import lamina.core`` costs nothing: the CLI
answers ``lamina --help`` without loading the builder, SQLite or the docker SDK, and
each verb loads only what it calls.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from lamina.core.accounting.ci import (
        CiConfigError,
        Evaluation,
        RuleResult,
        analysis_lines,
        read_dive_ci,
    )
    from lamina.core.accounting.ci import Rules as CiRules
    from lamina.core.accounting.ci import report_lines as ci_report_lines
    from lamina.core.accounting.diff import FileDiff, ImageDiff, ImageFiles, diff_images
    from lamina.core.accounting.dive import Analysis, WastedPath
    from lamina.core.accounting.plans import (
        Leftover,
        PlannedBlob,
        PlannedCache,
        PlannedImage,
        PlannedLayer,
        PrunePlan,
        PruneRequest,
        PruneResult,
        Skipped,
    )
    from lamina.core.accounting.usage import (
        CacheUsage,
        CategoryUsage,
        DiskUsage,
        ImageUsage,
        LayerUsage,
    )
    from lamina.core.advice.advise import advise
    from lamina.core.advice.findings import Advice, AdviceReport, Proof, ProofBuild, Saving
    from lamina.core.demo.workspace import DemoResult, create_demo
    from lamina.core.digest import short as short_digest
    from lamina.core.dockerfile.parser import ParseResult
    from lamina.core.dockerfile.parser import parse as parse_dockerfile
    from lamina.core.embedded.store.recover import RebuildReport, rebuild_index
    from lamina.core.engine import Engine, LocalStore
    from lamina.core.errors import (
        ArchiveError,
        BuildError,
        ContextError,
        DockerfileError,
        EngineUnavailable,
        InUse,
        LaminaError,
        NotFound,
        RegistryAuthError,
        RegistryError,
        RmiError,
        RunFailed,
        SandboxUnavailable,
        StoreError,
        UsageError,
    )
    from lamina.core.events import (
        BuildEvent,
        BuildFailed,
        BuildFinished,
        BuildStarted,
        StepFinished,
        StepOutput,
        StepStarted,
    )
    from lamina.core.filters import (
        Filter,
        parse_duration,
        parse_filters,
        parse_image_list_filters,
        parse_size,
        select_images,
    )
    from lamina.core.model import (
        BuildRecord,
        BuildRequest,
        BuildSources,
        CacheExport,
        FileChange,
        FsckProblem,
        FsckReport,
        HistoryEntry,
        ImageSummary,
        LayerInfo,
        StepRecord,
    )
    from lamina.core.open import default_home, open_archive, open_engine, open_remote, source_of
    from lamina.core.registry.client import TransferCancelled
    from lamina.core.registry.login import login as registry_login
    from lamina.core.registry.login import logout as registry_logout
    from lamina.core.registry.plan import PlannedPullLayer, PullPlan
    from lamina.core.registry.progress import (
        PullFinished,
        PushFinished,
        TransferEvent,
        TransferFinished,
        TransferProgressed,
        TransferStarted,
    )
    from lamina.core.settings import Config, load_config

__all__ = [
    "Advice",
    "AdviceReport",
    "Analysis",
    "ArchiveError",
    "BuildError",
    "BuildEvent",
    "BuildFailed",
    "BuildFinished",
    "BuildRecord",
    "BuildRequest",
    "BuildSources",
    "BuildStarted",
    "CacheExport",
    "CacheUsage",
    "CategoryUsage",
    "CiConfigError",
    "CiRules",
    "Config",
    "ContextError",
    "DemoResult",
    "DiskUsage",
    "DockerfileError",
    "Engine",
    "EngineUnavailable",
    "Evaluation",
    "FileChange",
    "FileDiff",
    "Filter",
    "FsckProblem",
    "FsckReport",
    "HistoryEntry",
    "ImageDiff",
    "ImageFiles",
    "ImageSummary",
    "ImageUsage",
    "InUse",
    "LaminaError",
    "LayerInfo",
    "LayerUsage",
    "Leftover",
    "LocalStore",
    "NotFound",
    "ParseResult",
    "PlannedBlob",
    "PlannedCache",
    "PlannedImage",
    "PlannedLayer",
    "PlannedPullLayer",
    "Proof",
    "ProofBuild",
    "PrunePlan",
    "PruneRequest",
    "PruneResult",
    "PullFinished",
    "PullPlan",
    "PushFinished",
    "RebuildReport",
    "RegistryAuthError",
    "RegistryError",
    "RmiError",
    "RuleResult",
    "RunFailed",
    "SandboxUnavailable",
    "Saving",
    "Skipped",
    "StepFinished",
    "StepOutput",
    "StepRecord",
    "StepStarted",
    "StoreError",
    "TransferCancelled",
    "TransferEvent",
    "TransferFinished",
    "TransferProgressed",
    "TransferStarted",
    "UsageError",
    "WastedPath",
    "advise",
    "analysis_lines",
    "ci_report_lines",
    "create_demo",
    "default_home",
    "diff_images",
    "load_config",
    "open_archive",
    "open_engine",
    "open_remote",
    "parse_dockerfile",
    "parse_duration",
    "parse_filters",
    "parse_image_list_filters",
    "parse_size",
    "read_dive_ci",
    "rebuild_index",
    "registry_login",
    "registry_logout",
    "select_images",
    "short_digest",
    "source_of",
]

# Where each public name lives.
_HOMES: dict[str, tuple[str, ...]] = {
    # Opening an engine, and the Protocols front ends talk to.
    "lamina.core.open": ("default_home", "open_archive", "open_engine", "open_remote", "source_of"),
    "lamina.core.engine": ("Engine", "LocalStore"),
    # The settings file (the cache policy, the app's keymap).
    "lamina.core.settings": ("Config", "load_config"),
    "lamina.core.model": (
        "BuildRecord",
        "BuildRequest",
        "BuildSources",
        "CacheExport",
        "FileChange",
        "FsckProblem",
        "FsckReport",
        "HistoryEntry",
        "ImageSummary",
        "LayerInfo",
        "StepRecord",
    ),
    "lamina.core.events": (
        "BuildEvent",
        "BuildFailed",
        "BuildFinished",
        "BuildStarted",
        "StepFinished",
        "StepOutput",
        "StepStarted",
    ),
    "lamina.core.errors": (
        "ArchiveError",
        "BuildError",
        "ContextError",
        "DockerfileError",
        "EngineUnavailable",
        "InUse",
        "LaminaError",
        "NotFound",
        "RegistryAuthError",
        "RegistryError",
        "RmiError",
        "RunFailed",
        "SandboxUnavailable",
        "StoreError",
        "UsageError",
    ),
    # Prune: what to prune, the plan a dry run shows, and what applying it did.
    "lamina.core.accounting.plans": (
        "Leftover",
        "PlannedBlob",
        "PlannedCache",
        "PlannedImage",
        "PlannedLayer",
        "PrunePlan",
        "PruneRequest",
        "PruneResult",
        "Skipped",
    ),
    "lamina.core.accounting.usage": (
        "CacheUsage",
        "CategoryUsage",
        "DiskUsage",
        "ImageUsage",
        "LayerUsage",
    ),
    "lamina.core.accounting.dive": ("Analysis", "WastedPath"),
    # Advice on a Dockerfile, proved on its build history (`lamina advise`).
    "lamina.core.advice.advise": ("advise",),
    "lamina.core.advice.findings": ("Advice", "AdviceReport", "Proof", "ProofBuild", "Saving"),
    # dive's CI gate (`lamina analyze --ci`).
    "lamina.core.accounting.ci": (
        "CiConfigError",
        "Evaluation",
        "RuleResult",
        "analysis_lines",
        "read_dive_ci",
    ),
    # Comparing two images file by file (`lamina diff`).
    "lamina.core.accounting.diff": ("FileDiff", "ImageDiff", "ImageFiles", "diff_images"),
    # What the command line parses the way Docker does.
    "lamina.core.filters": (
        "Filter",
        "parse_duration",
        "parse_filters",
        "parse_image_list_filters",
        "parse_size",
        "select_images",
    ),
    "lamina.core.dockerfile.parser": ("ParseResult",),
    "lamina.core.demo.workspace": ("DemoResult", "create_demo"),
    # Registries: the pull plan, transfer progress, and where credentials are kept.
    "lamina.core.registry.plan": ("PlannedPullLayer", "PullPlan"),
    "lamina.core.registry.progress": (
        "PullFinished",
        "PushFinished",
        "TransferEvent",
        "TransferFinished",
        "TransferProgressed",
        "TransferStarted",
    ),
    "lamina.core.registry.client": ("TransferCancelled",),
    # Recovering a lost index must work when the store refuses to open, so it takes
    # the store's directory rather than an engine.
    "lamina.core.embedded.store.recover": ("RebuildReport", "rebuild_index"),
}

# Names published under a clearer name than their module's.
_RENAMED: dict[str, tuple[str, str]] = {
    "parse_dockerfile": ("lamina.core.dockerfile.parser", "parse"),
    "short_digest": ("lamina.core.digest", "short"),
    "CiRules": ("lamina.core.accounting.ci", "Rules"),
    "ci_report_lines": ("lamina.core.accounting.ci", "report_lines"),
    "registry_login": ("lamina.core.registry.login", "login"),
    "registry_logout": ("lamina.core.registry.login", "logout"),
}

_EXPORTS: dict[str, tuple[str, str]] = {
    name: (module, name) for module, names in _HOMES.items() for name in names
} | _RENAMED


def __getattr__(name: str) -> Any:
    """Imports a public name's module on first use and caches the name here."""
    try:
        module, attr = _EXPORTS[name]
    except KeyError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
