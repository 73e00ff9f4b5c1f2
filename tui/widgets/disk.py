"""The Disk view: totals and reclaimable bytes per category, a bar chart, BuildKit's build
cache records (on a Docker Engine), and prune."""

from __future__ import annotations

import time

from textual.app import ComposeResult
from textual.markup import escape
from textual.widget import Widget
from textual.widgets import DataTable, Static

from lamina.core import DiskUsage, PrunePlan, PruneRequest, PruneResult
from lamina.tui import format as fmt
from lamina.tui.messages import PruneRequested

BAR_WIDTH = 30


def bar(value: int, total: int, width: int = BAR_WIDTH) -> str:
    """A horizontal bar of ``value`` out of ``total`` in eighth-block resolution."""
    if total <= 0 or value <= 0:
        return ""
    eighths = max(1, round(width * 8 * value / total))
    full, rest = divmod(min(eighths, width * 8), 8)
    return "█" * full + ("" if not rest else " ▏▎▍▌▋▊▉"[rest])


def usage_rows(usage: DiskUsage) -> list[tuple[str, int | None, int, int]]:
    """(category, count, bytes, reclaimable) rows, images split into shared/unique/dangling."""
    rows: list[tuple[str, int | None, int, int]] = []
    shared = sum(layer.size for layer in usage.layers if len(layer.images) > 1)
    unique = sum(layer.size for layer in usage.layers if len(layer.images) == 1)
    dangling = [i for i in usage.images if i.dangling]
    tagged_layers = (
        {la.chain_id for la in usage.layers if any(i in tagged_ids for i in la.images)}
        if (tagged_ids := {i.id for i in usage.images if not i.dangling})
        else set()
    )
    dangling_ids = {i.id for i in dangling}
    dangling_only = [
        la
        for la in usage.layers
        if la.chain_id not in tagged_layers and set(la.images) & dangling_ids
    ]
    for category in usage.categories:
        name = category.name.replace("_", " ")
        rows.append((name, category.count, category.size, category.reclaimable))
        if category.name == "images":
            rows.append(
                ("  shared layers", sum(1 for la in usage.layers if len(la.images) > 1), shared, 0)
            )
            rows.append(
                ("  unique layers", sum(1 for la in usage.layers if len(la.images) == 1), unique, 0)
            )
            # Layers only dangling images use: what they hold on to beyond the tagged ones.
            rows.append(
                (
                    "  dangling images",
                    len(dangling),
                    sum(la.size for la in dangling_only),
                    # What `image prune` frees: the dangling images together (their
                    # exclusive closures summed would count shared configs twice).
                    category.reclaimable,
                )
            )
    return rows


def buildkit_rows(usage: DiskUsage, clock: fmt.Clock = time.time) -> list[tuple[str, ...]]:
    """One row per BuildKit build cache record, with ``docker buildx du --verbose``'s
    fields: record, type, description, parents, in use, shared, size, last used, usage
    count (none on lamina's own store, whose cache has no BuildKit records)."""
    rows: list[tuple[str, ...]] = []
    for c in usage.cache:
        if not c.record_type:
            continue
        rows.append(
            (
                c.key.split(":", 1)[-1][:12],
                c.record_type,
                c.description or "-",
                ", ".join(p[:12] for p in c.parents) or "-",
                "yes" if c.in_use else "no",
                "yes" if c.shared else "no",
                fmt.size(c.size),
                fmt.ago(c.last_used, clock),
                str(c.use_count),
            )
        )
    return rows


def prune_rows(usage: DiskUsage, dangling_plan: PrunePlan | None) -> list[tuple[str, int]]:
    """What each prune would free now: the engine's own list (``DiskUsage.prunes``, the
    plans a dry run prints), with the ``p`` key's plan first."""
    rows = []
    if dangling_plan is not None:
        rows.append(("image prune (dangling)  [key p]", dangling_plan.reclaimable_bytes))
    rows += [(p.command, p.bytes) for p in usage.prunes if p.command != "image prune"]
    return rows


class DiskView(Widget):
    """Where the bytes go and what pruning frees."""

    def __init__(self, *, id: str | None = None, clock: fmt.Clock = time.time) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.usage: DiskUsage | None = None
        self.dangling_plan: PrunePlan | None = None
        self.last_result: PruneResult | None = None  # shown with the next usage

    def compose(self) -> ComposeResult:
        yield Static("Computing disk usage…", id="disk-summary")
        table: DataTable[str] = DataTable(id="disk-table", cursor_type="none", zebra_stripes=True)
        yield table
        records: DataTable[str] = DataTable(
            id="disk-buildkit", cursor_type="row", zebra_stripes=True
        )
        records.display = False  # only a Docker Engine has BuildKit records
        yield records
        yield Static("", id="disk-prune")

    def on_mount(self) -> None:
        table = self.query_one("#disk-table", DataTable)
        for key, title in (
            ("category", "category"),
            ("count", "count"),
            ("size", "size"),
            ("reclaimable", "reclaimable"),
            ("bar", "share of total"),
        ):
            table.add_column(title, key=key)
        records = self.query_one("#disk-buildkit", DataTable)
        for title in (
            "build cache record",
            "type",
            "description",
            "parents",
            "in use",
            "shared",
            "size",
            "last used",
            "usage",
        ):
            records.add_column(title, key=title)

    def show_usage(self, usage: DiskUsage, dangling_plan: PrunePlan | None) -> None:
        """Shows new accounting and what pruning dangling images would free now."""
        self.usage, self.dangling_plan = usage, dangling_plan
        rows = usage_rows(usage)
        total = usage.layers_size or max((r[2] for r in rows), default=0)
        table = self.query_one("#disk-table", DataTable)
        table.clear()
        for name, count, size, reclaim in rows:
            table.add_row(
                escape(name),
                "" if count is None else str(count),
                fmt.size(size),
                fmt.size(reclaim) if reclaim else "",
                fmt.themed(self.app, f"[$primary]{bar(size, total)}[/]"),
                key=name,
            )
        records = self.query_one("#disk-buildkit", DataTable)
        records.clear()
        rows_bk = buildkit_rows(usage, self.clock)
        for number, row in enumerate(rows_bk):
            records.add_row(*(escape(cell) for cell in row), key=str(number))
        records.display = bool(rows_bk)
        used = usage.fs_total - usage.fs_free
        # Sizes are Docker's (the files' bytes); what the filesystem gives back is blocks.
        on_disk = (
            f"\n[dim]on disk (blocks, hard links once):[/] layers {fmt.size(usage.layers_disk)},"
            f" system prune frees {fmt.size(usage.reclaimable_disk)}"
            + (
                f", identical files stored once save {fmt.size(usage.dedup_saved)}"
                if usage.dedup_saved
                else ""
            )
            if usage.layers_disk
            else ""
        )
        self.query_one("#disk-summary", Static).update(
            f"layers [b]{fmt.size(usage.layers_size)}[/]   reclaimable [b]{fmt.size(usage.reclaimable)}[/]"
            f" (system prune)   filesystem: [b]{fmt.size(usage.fs_free)}[/] free of "
            f"{fmt.size(usage.fs_total)}{on_disk}\n"
            f"[$primary]{bar(used, usage.fs_total, 40)}[/][dim]{'░' * (40 - len(bar(used, usage.fs_total, 40)))}[/]"
            f"  {escape(usage.home)}"
        )
        self._render_prune_preview()

    def _render_prune_preview(self) -> None:
        prune = self.query_one("#disk-prune", Static)
        if self.dangling_plan is None:
            prune.update("[dim]No prune preview available.[/]")
            return
        plan = self.dangling_plan
        text = (
            "[b]What each prune would free now[/b]\n"
            + "\n".join(
                f"  {escape(label):<34} {fmt.size(n):>9}"
                for label, n in prune_rows(self.usage, self.dangling_plan)
            )
            if self.usage is not None
            else ""
        )
        kept = self._dangling_kept()
        if plan.empty:
            text += "\n[dim]Nothing to prune.[/]"
        else:
            text += f"\n[b]p[/b] prunes {escape(fmt.plan_summary(plan))}"
        if kept:
            stays = "1 dangling image stays" if kept == 1 else f"{kept} dangling images stay"
            text += (
                f"\n[dim]{stays}: image prune keeps what a kept image was built FROM"
                " (and what a running build uses).[/]"
            )
        if self.last_result is not None:
            text += f"\n[$success]Last prune: {escape(fmt.prune_result(self.last_result))}[/]"
        prune.update(text)

    def _dangling_kept(self) -> int:
        """How many dangling images the shown plan leaves (so a count of dangling images
        beside "nothing to prune" says why)."""
        if self.usage is None or self.dangling_plan is None:
            return 0
        planned = {p.id for p in self.dangling_plan.images}
        return sum(1 for i in self.usage.dangling if i not in planned)

    def request_prune(self) -> None:
        """Asks for a dangling prune; the screen confirms its plan before applying it."""
        self.post_message(PruneRequested(PruneRequest()))
