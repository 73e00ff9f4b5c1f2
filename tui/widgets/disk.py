"""The Disk view: totals and reclaimable bytes per category, a bar chart, and prune."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from textual.app import ComposeResult
from textual.markup import escape
from textual.message import Message
from textual.widget import Widget
from textual.widgets import DataTable, Static

from lamina.tui.messages import DiskUsageLoaded, PruneApplied, PrunePlanned
from lamina.tui.widgets import format as fmt

if TYPE_CHECKING:
    from lamina.tui.app import LaminaApp

BAR_WIDTH = 30


def bar(value: int, total: int, width: int = BAR_WIDTH) -> str:
    """A horizontal bar of ``value`` out of ``total`` in eighth-block resolution."""
    if total <= 0 or value <= 0:
        return ""
    eighths = max(1, round(width * 8 * value / total))
    full, rest = divmod(min(eighths, width * 8), 8)
    return "█" * full + ("" if not rest else " ▏▎▍▌▋▊▉"[rest])


def usage_rows(usage: Any) -> list[tuple[str, int | None, int, int]]:
    """(category, count, size, reclaimable) rows from a DiskUsage.

    Uses ``usage.categories()`` / ``usage.rows`` when the accounting provides them, else
    every ``<name>_size``/``<name>_count``/``<name>_reclaimable`` field it has.
    """
    for attr in ("categories", "rows"):
        value = getattr(usage, attr, None)
        if callable(value):
            value = value()
        if value:
            rows = []
            for row in value:
                if isinstance(row, tuple):
                    name, count, size, reclaim = (list(row) + [None, 0, 0])[:4]
                else:
                    name = getattr(row, "name", getattr(row, "category", "?"))
                    count = getattr(row, "count", None)
                    size = getattr(row, "size", 0)
                    reclaim = getattr(row, "reclaimable", 0)
                rows.append((str(name), count, int(size or 0), int(reclaim or 0)))
            return rows
    fields = dataclasses.asdict(usage) if dataclasses.is_dataclass(usage) else dict(vars(usage))
    names: list[str] = []
    for key in fields:
        for suffix in ("_size", "_bytes"):
            if key.endswith(suffix) and key[: -len(suffix)] not in names:
                names.append(key[: -len(suffix)])
    rows = []
    for name in names:
        size = fields.get(f"{name}_size", fields.get(f"{name}_bytes", 0))
        if not isinstance(size, int):
            continue
        count = fields.get(f"{name}_count")
        reclaim = fields.get(f"{name}_reclaimable", 0)
        rows.append((name.replace("_", " "), count if isinstance(count, int) else None, size,
                     reclaim if isinstance(reclaim, int) else 0))
    return rows


def plan_lines(plan: Any) -> tuple[list[str], int]:
    """Every item a prune plan removes, one line each, and the bytes it frees."""
    lines: list[str] = []
    describe = getattr(plan, "describe", None)
    if callable(describe):
        lines = [str(x) for x in describe()]
    else:
        for attr, label in (("images", "image"), ("layers", "layer"), ("cache", "cache entry"),
                            ("cache_entries", "cache entry"), ("blobs", "blob")):
            for item in getattr(plan, attr, ()) or ():
                lines.append(f"{label} {_item_text(item)}")
    freed = 0
    for attr in ("reclaimed", "bytes", "reclaimable", "freed", "size", "total_bytes"):
        value = getattr(plan, attr, None)
        if isinstance(value, int):
            freed = value
            break
    return lines, freed


def _item_text(item: Any) -> str:
    if isinstance(item, str):
        return fmt.digest(item) if item.startswith("sha256:") else item
    ident = getattr(item, "id", None) or getattr(item, "chain_id", None) or getattr(item, "key", "")
    size = getattr(item, "size", None)
    tags = getattr(item, "tags", None)
    text = fmt.digest(str(ident)) if str(ident).startswith("sha256:") else str(ident)
    if tags:
        text += " " + ", ".join(tags)
    if isinstance(size, int):
        text += f"  {fmt.size(size)}"
    return text


class DiskView(Widget):
    """Where the bytes go and what pruning frees."""

    @dataclass
    class Pruned(Message):
        """A prune was applied (images and layers changed)."""

        result: Any

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.usage: Any | None = None
        self.dangling_plan: Any | None = None
        self.last_result: Any | None = None

    @property
    def lamina(self) -> LaminaApp:
        from lamina.tui.app import LaminaApp

        assert isinstance(self.app, LaminaApp)
        return self.app

    def compose(self) -> ComposeResult:
        yield Static("Computing disk usage…", id="disk-summary")
        table: DataTable[str] = DataTable(id="disk-table", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("", id="disk-prune")

    def on_mount(self) -> None:
        table = self.query_one("#disk-table", DataTable)
        for key, title in (("category", "category"), ("count", "count"), ("size", "size"),
                           ("reclaimable", "reclaimable"), ("bar", "share of total")):
            table.add_column(title, key=key)

    def on_disk_usage_loaded(self, event: DiskUsageLoaded) -> None:
        event.stop()
        self.usage, self.dangling_plan = event.usage, event.dangling_plan
        rows = usage_rows(event.usage)
        table = self.query_one("#disk-table", DataTable)
        table.clear()
        total = int(getattr(event.usage, "total", 0) or 0) or max((r[2] for r in rows), default=0)
        for name, count, size, reclaim in rows:
            table.add_row(
                escape(name), "" if count is None else str(count), fmt.size(size),
                fmt.size(reclaim) if reclaim else "",
                f"[$primary]{bar(size, total)}[/][$warning]{bar(reclaim, total, 0) }[/]",
                key=name,
            )
        free = getattr(event.usage, "free", None) or getattr(event.usage, "fs_free", None)
        reclaimable = getattr(event.usage, "reclaimable", None)
        parts = [f"total [b]{fmt.size(total)}[/]"]
        if isinstance(reclaimable, int):
            parts.append(f"reclaimable [b]{fmt.size(reclaimable)}[/]")
        if isinstance(free, int):
            parts.append(f"filesystem free [b]{fmt.size(free)}[/]")
        self.query_one("#disk-summary", Static).update("   ".join(parts))
        self._render_prune_preview()

    def _render_prune_preview(self) -> None:
        prune = self.query_one("#disk-prune", Static)
        if self.dangling_plan is None:
            prune.update("[dim]No prune preview available.[/]")
            return
        lines, freed = plan_lines(self.dangling_plan)
        text = (f"[b]p[/b] prune dangling images and their layers: frees [b]{fmt.size(freed)}[/] "
                f"({len(lines)} item(s))")
        if not lines:
            text = "[dim]Nothing dangling to prune.[/]"
        if self.last_result is not None:
            text += f"\n[$success]Last prune: {escape(_result_text(self.last_result))}[/]"
        prune.update(text)

    def request_prune(self) -> None:
        """Plans a dangling prune; the confirmation follows when the plan arrives."""
        from lamina.core.prune import PruneRequest

        self.lamina.plan_prune(PruneRequest(), self)

    def on_prune_planned(self, event: PrunePlanned) -> None:
        event.stop()
        from lamina.tui.screens.confirm import ConfirmPruneScreen

        plan = event.plan

        def confirmed(ok: bool | None) -> None:
            if ok:
                self.lamina.apply_prune(plan, self)

        self.app.push_screen(ConfirmPruneScreen(plan), confirmed)

    def on_prune_applied(self, event: PruneApplied) -> None:
        event.stop()
        self.last_result = event.result
        self.notify(_result_text(event.result), title="Pruned")
        self.post_message(self.Pruned(event.result))
        self.lamina.load_disk(self)


def _result_text(result: Any) -> str:
    for attr in ("reclaimed", "freed", "bytes"):
        value = getattr(result, attr, None)
        if isinstance(value, int):
            return f"reclaimed {fmt.size(value)}"
    return str(result)
