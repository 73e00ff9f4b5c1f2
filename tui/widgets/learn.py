"""The Learn view: why the selected step hit or missed, and a guided tour of the cache."""

from __future__ import annotations

from dataclasses import dataclass

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.markup import escape
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Static

from lamina.core import BuildRecord, StepRecord
from lamina.tui import format as fmt
from lamina.tui.graph import LayerGraph


@dataclass(frozen=True)
class TourStop:
    """One stop of the guided tour: what was done, and the kind of miss it shows."""

    title: str
    story: str
    kinds: tuple[str, ...]  # reason kinds that illustrate it; () = a HIT on COPY
    want_hit: bool = False


TOUR = (
    TourStop(
        "1. Change a line: the cascade",
        "A rebuild after editing one RUN line: that step misses because its instruction "
        "changed, and every later step of the stage misses too, since each runs on a parent "
        "state that never existed before. One edited line near the top rebuilds everything "
        "below it.",
        ("instruction_changed",),
    ),
    TourStop(
        "2. Touch a file: still cached",
        "Touching a context file changes only its modification time. The COPY step's key is a "
        "checksum of names, modes and contents, never mtimes, so the step hits.",
        (),
        want_hit=True,
    ),
    TourStop(
        "3. Change a mode: a miss",
        "Making a copied file executable changes its mode, which the COPY checksum includes. "
        "The step misses and names the file and what changed about it.",
        ("sources_changed",),
    ),
)


class LearnView(Widget):
    """An explanation that follows the selection, and the tour."""

    step: reactive[StepRecord | None] = reactive(None)
    build: reactive[BuildRecord | None] = reactive(None)
    tour_index: reactive[int] = reactive(0)
    graph: reactive[LayerGraph | None] = reactive(None)
    # What the explanation follows when it came from the Layers or Images view.
    origin: reactive[str] = reactive("")

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.builds: list[BuildRecord] = []
        # The layer or image the explanation follows, while it came from one.
        self._following: str | None = None

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static("", id="explain")
            yield Static("", id="tour")

    def on_mount(self) -> None:
        self.refresh_explanation()

    def watch_step(self) -> None:
        self.refresh_explanation()

    def watch_origin(self) -> None:
        self.refresh_explanation()

    def watch_graph(self, graph: LayerGraph | None) -> None:
        # A pruned layer or image leaves nothing to follow.
        followed = self._following
        if graph is None or followed is None:
            return
        if followed not in graph.by_id and all(i.id != followed for i in graph.images):
            self._following = None
            self.origin = ""
            self.build, self.step = None, None

    def follow_step(self, build: BuildRecord | None, step: StepRecord) -> None:
        """Explains a step selected in the Builds view."""
        self._following = None
        self.origin = ""
        self.build, self.step = build, step

    def follow_layer(self, chain_id: str) -> None:
        """Explains the latest recorded step that made (or reused) a layer selected in
        the Layers view."""
        found = next(((b, s) for b in self.builds for s in b.steps if s.layer == chain_id), None)
        what = f"layer {fmt.digest(chain_id)}"
        self._following = chain_id
        if found is None:
            self.build, self.step = None, None
            self.origin = (
                f"{what} was not made by a build lamina recorded (it was loaded or imported,"
                " or its build record is gone): there is no cache decision to explain."
            )
            return
        self.build, self.step = found
        self.origin = f"{what}, selected in Layers, comes from this step:"

    def follow_image(self, image_id: str) -> None:
        """Explains the build of an image selected in the Images view: its first miss,
        or its last step when every step hit."""
        build = next((b for b in self.builds if b.image == image_id), None)
        what = f"image {fmt.digest(image_id)}"
        self._following = image_id
        if build is None or not build.steps:
            self.build, self.step = None, None
            self.origin = (
                f"{what} was not built by a build lamina recorded (it was loaded or"
                " imported, or its build record is gone): there is no cache decision to"
                " explain."
            )
            return
        step = next((s for s in build.steps if s.cached is False), build.steps[-1])
        self.build, self.step = build, step
        self.origin = f"{what}, selected in Images, was built by build #{build.id}:"

    def watch_tour_index(self) -> None:
        self.refresh_explanation()

    def move_tour(self, delta: int) -> None:
        """Goes to the next (1) or previous (-1) tour stop and explains its example step."""
        self.tour_index = (self.tour_index + delta) % len(TOUR)
        example = self.example_for(TOUR[self.tour_index])
        if example is not None:
            self.build, self.step = example

    def set_builds(self, builds: list[BuildRecord]) -> None:
        self.builds = builds
        self.refresh_explanation()

    def example_for(self, stop: TourStop) -> tuple[BuildRecord, StepRecord] | None:
        """A recorded step that illustrates ``stop``: in a rebuild (a build with hits), oldest first."""
        for build in reversed(self.builds):
            if not any(s.cached for s in build.steps):
                continue  # a first build misses everywhere and illustrates nothing
            for s in build.steps:
                if stop.want_hit:
                    if s.cached is True and s.instruction.split()[:1] in (["COPY"], ["ADD"]):
                        return build, s
                elif s.cached is False and s.reason is not None and s.reason["kind"] in stop.kinds:
                    return build, s
        return None

    def explanation(self, build: BuildRecord | None, step: StepRecord | None) -> str:
        """Plain words on why ``step`` hit or missed and what would make it hit."""
        if step is None:
            return (
                "[b]Why did it hit or miss?[/b]\nSelect a step in the Builds view (3), a "
                "layer in Layers (1) or an image in Images (2), and this panel explains its "
                "cache decision."
            )
        where = f"build #{build.id}, " if build else ""
        head = (
            f"[b]{escape(' '.join(step.instruction.split()))}[/b]\n"
            f"{where}stage {step.stage} step {step.index}: {fmt.verdict(step)}\n"
        )
        if step.cached is None:
            return head + (
                "FROM starts a stage: it picks the base image, and every later key "
                "chains on that image's config. A different base misses everything."
            )
        if step.cached:
            return head + (
                "A cache entry exists with the same parent state and the same step "
                "configuration (instruction, build args in scope, config, and for "
                "COPY/ADD a checksum of the files), so its result was reused and "
                "nothing ran."
            )
        reason = fmt.describe_reason(step.reason)
        return (
            head + f"[b]Why:[/b] {escape(reason)}\n"
            f"[b]To hit:[/b] {escape(fmt.explain_reason(step.reason))}"
        )

    def refresh_explanation(self) -> None:
        if not self.is_mounted:
            return
        text = self.explanation(self.build, self.step)
        if self.origin:
            text = f"[dim]{escape(self.origin)}[/]\n{text}"
        self.query_one("#explain", Static).update(text)
        stop = TOUR[self.tour_index]
        example = self.example_for(stop)
        lines = [
            f"[b]Guided tour[/b] [dim](n: next, b: back)[/]  {self.tour_index + 1}/{len(TOUR)}",
            f"[b $accent]{escape(stop.title)}[/]",
            escape(stop.story),
        ]
        if example is not None:
            build, s = example
            lines.append(
                f"\nIn this store: build #{build.id}, step {s.stage}/{s.index} "
                f"[i]{escape(' '.join(s.instruction.split()))}[/i] → {fmt.verdict(s)}"
            )
            if s.cached is False:
                lines.append(f"  {escape(fmt.describe_reason(s.reason))}")
                after = build.steps[build.steps.index(s) + 1 :]
                cascade = sum(
                    1 for x in after if x.reason is not None and x.reason["kind"] == "parent_missed"
                )
                if cascade:
                    lines.append(f"  …and the {cascade} step(s) after it missed because it did.")
        else:
            lines.append(
                "\n[dim]No build in this store shows it yet: run `lamina demo` to "
                "create one that does.[/]"
            )
        self.query_one("#tour", Static).update("\n".join(lines))
