"""The Layers view: the layer graph as a tree, and the selected layer's details and files."""

from __future__ import annotations

import stat
import time
from dataclasses import dataclass

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.markup import escape
from textual.message import Message
from textual.reactive import reactive
from textual.timer import Timer
from textual.widget import Widget
from textual.widgets import DataTable, Input, Static, Tree
from textual.widgets.tree import TreeNode

from lamina.core import BuildRecord, FileChange
from lamina.tui import format as fmt
from lamina.tui.graph import LayerGraph
from lamina.tui.messages import LayerChangesRequested
from lamina.tui.widgets.settling import SETTLE_DELAY, after_settling

# Below this many layers the whole graph is expanded on load; above, it unfolds on demand.
EXPAND_ALL_BELOW = 400
# Seconds between redraws of the relative times ("a minute ago"), so they stay current.
TIME_REFRESH = 30.0
CHANGE_MARK = {"added": "[$success]A[/]", "modified": "[$warning]M[/]", "deleted": "[$error]D[/]"}


def _mode(change: FileChange) -> str:
    return stat.filemode(change.mode) if change.mode else "-"


class LayersView(Widget):
    """Tree of layers (base at the root) with tags where images end."""

    @dataclass
    class LayerSelected(Message):
        """The user highlighted a layer (the Learn view explains the step that made it)."""

        chain_id: str

    graph: reactive[LayerGraph | None] = reactive(None, always_update=True)
    full_digests: reactive[bool] = reactive(False)
    selected: reactive[str | None] = reactive(None)

    def __init__(
        self,
        *,
        id: str | None = None,
        clock: fmt.Clock = time.time,
        settle_delay: float = SETTLE_DELAY,
    ) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.settle_delay = settle_delay
        self.changes: list[FileChange] = []
        self.changes_for: str | None = None
        self.builds: list[BuildRecord] = []
        self.cache_users: dict[str, int] = {}  # chainID -> cache entries keeping it
        self._changes_timer: Timer | None = None

    def compose(self) -> ComposeResult:
        with Horizontal():
            tree: Tree[str] = Tree("layers", id="layer-tree")
            tree.show_root = False
            tree.guide_depth = 2
            yield tree
            with Vertical(id="layer-detail"):
                yield Static("Loading layers…", id="layer-info")
                yield Input(
                    placeholder="filter files (path, or added/modified/deleted)", id="file-filter"
                )
                yield Static("", id="file-summary")
                table: DataTable[str] = DataTable(
                    id="file-changes", cursor_type="row", zebra_stripes=True
                )
                yield table

    def on_mount(self) -> None:
        self.set_interval(TIME_REFRESH, self.refresh_info)
        table = self.query_one("#file-changes", DataTable)
        table.add_column("", key="change", width=1)
        # Fixed widths: auto widths would depend on which rows arrived before the first layout.
        table.add_column("path", key="path", width=56)
        table.add_column("size", key="size", width=9)
        table.add_column("mode", key="mode", width=10)

    # ------------------------------------------------------------------ tree

    def _label(self, chain_id: str) -> str:
        graph = self.graph
        assert graph is not None
        layer = graph.by_id[chain_id]
        shared = graph.share_count(chain_id)
        created_by = escape(_one_line(graph.created_by(chain_id)) or "(no instruction recorded)")
        label = f"[dim]{fmt.digest(chain_id)[:12]}[/] {fmt.size(layer.size):>8} "
        if shared > 1:
            label = f"[b $accent]×{shared}[/] " + label
        # Tags first, so a narrow terminal cuts the instruction, not where an image ends.
        tags = [t for image in graph.images_at.get(chain_id, ()) for t in image.tags]
        dangling = [i for i in graph.images_at.get(chain_id, ()) if not i.tags]
        if tags:
            label += " ".join(f"[b $success]◆ {escape(t)}[/]" for t in sorted(tags)) + " "
        if dangling:
            label += " ".join(f"[$warning]◇ <none> {fmt.digest(i.id)}[/]" for i in dangling) + " "
        label += created_by
        return fmt.themed(self.app, label)

    def _add_layers_on(self, node: TreeNode[str], parent: str | None) -> None:
        """Adds the layers directly on top of ``parent`` under ``node`` (children lazily)."""
        graph = self.graph
        assert graph is not None
        for chain_id in graph.children.get(parent, ()):
            node.add(
                self._label(chain_id),
                data=chain_id,
                allow_expand=bool(graph.children.get(chain_id)),
            )

    def watch_graph(self, graph: LayerGraph | None) -> None:
        if graph is None:
            return
        tree = self.query_one("#layer-tree", Tree)
        previous = self.selected
        tree.clear()
        tree.root.data = None
        self._add_layers_on(tree.root, None)
        tree.root.expand()
        if len(graph.layers) < EXPAND_ALL_BELOW:
            self._expand_all(tree.root)
        if not graph.layers:
            self.query_one("#layer-info", Static).update(
                "No layers yet. Load an image (lamina load) or build one (lamina build)."
            )
            return
        target = previous if previous in graph.by_id else graph.roots[0] if graph.roots else None
        if target != previous:
            # The selected layer is gone (pruned): the details and files follow the
            # cursor's new layer even when the cursor's line does not move.
            self.selected = target
        self.call_after_refresh(self._select, target)

    def _expand_all(self, node: TreeNode[str]) -> None:
        for child in node.children:
            if child.allow_expand:
                if not child.children:
                    self._add_layers_on(child, child.data)
                child.expand()
                self._expand_all(child)

    def _select(self, chain_id: str | None) -> None:
        tree = self.query_one("#layer-tree", Tree)
        for line in range(tree.last_line + 1):
            node = tree.get_node_at_line(line)
            if node is not None and node.data == chain_id:
                tree.move_cursor(node)
                return

    @on(Tree.NodeExpanded, "#layer-tree")
    def _expanded(self, event: Tree.NodeExpanded[str]) -> None:
        node = event.node
        if node.data is not None and not node.children and self.graph is not None:
            self._add_layers_on(node, node.data)

    @on(Tree.NodeHighlighted, "#layer-tree")
    def _highlighted(self, event: Tree.NodeHighlighted[str]) -> None:
        if event.node.data:
            self.selected = event.node.data

    def watch_selected(self, chain_id: str | None) -> None:
        self._render_info()
        if chain_id is None:
            return
        self.post_message(self.LayerSelected(chain_id))
        # The old rows stay until the new ones arrive: clearing per key press is wasted work.
        # Both panes have a fixed size (app.tcss), so a new text needs no relayout: on a
        # 20,000-layer tree a relayout per key press was most of its latency.
        self.query_one("#file-summary", Static).update("Reading files…", layout=False)
        # Holding an arrow key should not start a directory walk per layer passed.
        if self._changes_timer is not None:
            self._changes_timer.stop()
        self._changes_timer = after_settling(self, self.settle_delay, self._request_changes)

    def _request_changes(self) -> None:
        self._changes_timer = None
        if self.selected is not None:
            self.post_message(LayerChangesRequested(self.selected))

    @property
    def changes_pending(self) -> bool:
        """True while a selection waits for its files to be requested."""
        return self._changes_timer is not None

    def watch_full_digests(self, full: bool) -> None:
        # Full digests wrap over several lines: the details pane grows to hold them
        # (app.tcss), instead of scrolling the other fields out of its fixed height.
        self.set_class(full, "full-digests")
        self._render_info()

    def refresh_info(self) -> None:
        """Redraws the selected layer's details (after new accounting arrived, and as the
        clock moves on)."""
        self._render_info()

    # ---------------------------------------------------------------- detail

    def _render_info(self) -> None:
        info = self.query_one("#layer-info", Static)
        graph, chain_id = self.graph, self.selected
        if graph is None or chain_id is None or chain_id not in graph.by_id:
            return
        layer = graph.by_id[chain_id]
        show = (lambda d: d or "-") if self.full_digests else fmt.digest
        users = graph.images_using.get(chain_id, [])
        names = ", ".join(
            escape(", ".join(i.tags)) if i.tags else f"<none> {fmt.digest(i.id)}" for i in users
        )
        steps = [
            f"build #{b.id} step {s.index}" + ("" if s.stage == 0 else f" (stage {s.stage})")
            for b in self.builds
            for s in b.steps
            if s.layer == chain_id
        ]
        lines = [
            f"[b]{escape(_one_line(graph.created_by(chain_id)) or '(no instruction recorded)')}[/b]",
            f"size     {fmt.size(layer.size)}    created {fmt.ago(layer.created, self.clock)}",
            f"used by  {len(users)} image(s): {names or '(none: kept by build cache or unused)'}",
        ]
        cache = self.cache_users.get(chain_id)
        built = f"built by {', '.join(steps[:4])}" if steps else ""
        if cache is not None:
            lines.append(
                f"cache    {cache} build cache entr{'y' if cache == 1 else 'ies'} keep it"
                + (f"; {built}" if built else "")
            )
        elif built:
            lines.append(built)
        # Digests last: full ones wrap over several lines and must not push the rest away.
        lines += [
            f"chainID  {show(layer.chain_id)}",
            f"diffID   {show(layer.diff_id)}",
            f"parent   {show(layer.parent) if layer.parent else '(base layer)'}",
        ]
        # A fixed-height pane needs no relayout per key press; a growing one does.
        info.update("\n".join(lines), layout=self.full_digests)

    def show_changes(self, chain_id: str, changes: list[FileChange]) -> None:
        """Lists a layer's file changes, unless the cursor has moved on."""
        if chain_id != self.selected:
            return  # the cursor moved on while the files were read
        self.changes, self.changes_for = changes, chain_id
        self._render_changes()

    @on(Input.Changed, "#file-filter")
    def _filter_changed(self) -> None:
        self._render_changes()

    def focus_filter(self) -> None:
        self.query_one("#file-filter", Input).focus()

    @property
    def filtering(self) -> bool:
        """Whether the file filter has the focus."""
        return self.query_one("#file-filter", Input).has_focus

    def leave_filter(self) -> None:
        """Back to the tree; the filter stays applied."""
        self.query_one("#layer-tree", Tree).focus()

    @on(Input.Submitted, "#file-filter")
    def _filter_submitted(self) -> None:
        self.leave_filter()

    def visible_changes(self) -> list[FileChange]:
        """The selected layer's changes that match the filter."""
        needle = self.query_one("#file-filter", Input).value.strip().lower()
        if not needle:
            return list(self.changes)
        return [c for c in self.changes if needle in c.path.lower() or needle == c.change]

    def _render_changes(self) -> None:
        table = self.query_one("#file-changes", DataTable)
        table.clear()
        rows = self.visible_changes()
        for i, change in enumerate(rows):
            path = change.path + ("/" if change.kind == "dir" else "")
            if change.link_target:
                path += (
                    " → "
                    + change.link_target
                    + (" (hard link)" if change.kind == "hardlink" else "")
                )
            table.add_row(
                fmt.themed(self.app, CHANGE_MARK.get(change.change, "?")),
                escape(path),
                fmt.size(change.size) if change.kind in ("file", "other") else "",
                _mode(change),
                key=f"{i}:{change.path}",
            )
        if self.changes_for is None:
            return
        totals = {k: [0, 0] for k in ("added", "modified", "deleted")}
        for change in self.changes:
            if change.change in totals:
                totals[change.change][0] += 1
                totals[change.change][1] += change.size
        summary = "  ".join(
            f"{CHANGE_MARK[k]} {n} {k} ({fmt.size(b)})" for k, (n, b) in totals.items()
        )
        shown = len(rows)
        if shown != len(self.changes):
            summary += f"  [dim]showing {shown} of {len(self.changes)}[/]"
        self.query_one("#file-summary", Static).update(summary, layout=False)


def _one_line(text: str) -> str:
    return fmt.instruction(text)
