"""The Learn view: why the selected step hit or missed, the advice on the selected build's
Dockerfile (``a`` opens its rewrites and their proof), and a guided tour of the cache."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.markup import escape
from textual.reactive import reactive
from textual.widget import Widget
from textual.widgets import Static

from lamina.core import AdviceReport, BuildRecord, StepRecord
from lamina.tui import format as fmt
from lamina.tui.graph import LayerGraph
from lamina.tui.messages import AdviceRequested


@dataclass(frozen=True)
class TourStop:
    """One stop of the guided tour: what was done, and the kind of miss it shows."""

    title: str
    story: str
    kinds: tuple[str, ...]  # reason kinds that illustrate it; () = a HIT on COPY
    want_hit: bool = False
    parting: bool = False  # a COPY/ADD the other builder would have decided otherwise


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
    TourStop(
        "4. Edit a LABEL: where the builders part",
        "Editing the LABEL above a COPY. Under BuildKit, the builder `docker build` runs, a "
        "LABEL is no step at all: it only sets the image config, and a COPY's key holds its "
        "options and a checksum of what it copies, so the COPY hits. The classic builder "
        "commits every instruction and keys each step on the whole image config: there the "
        "LABEL misses, and every step below it misses after it.",
        ("settings_not_keyed",),
        parting=True,
    ),
)

BUILDER_NAMES = {"buildkit": "BuildKit", "classic": "the classic builder"}

# Why the two builders decide differently, by what they part on (see `parting_topic`).
PARTING = {
    "settings": "BuildKit keys a step on what it reads: its parent's files and, for RUN, the "
    "env, user, working directory, network and mounts. Labels, ports, the command and the "
    "like only go into the image config (ENV, USER and WORKDIR reach a RUN's key because a "
    "RUN reads them). The classic builder commits every instruction as an image and keys "
    "each step on the whole config, so a changed setting misses there and every step below "
    "it runs again.",
    "stages": "BuildKit builds only the stages the target reaches (through FROM, COPY "
    "--from and RUN --mount=from=); the classic builder builds every stage up to the "
    "target, needed or not.",
    "merged": "BuildKit solves the whole build as one graph, where the same step on the "
    "same state is one node, run once for every stage that has it. The classic builder "
    "walks each stage on its own: it runs the step in the first stage and finds it cached "
    "in the second.",
    "transfer": "BuildKit sends the context incrementally and skips files whose size and "
    "modification time look unchanged, so it can miss a change a full transfer sees. "
    "lamina decides by content, as the classic builder's full transfer does.",
}


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def builder_name(builder: str | None, *, start: bool = False) -> str:
    """A builder as a sentence names it (``BuildKit``, ``the classic builder``);
    ``start``: at the start of a sentence."""
    name = BUILDER_NAMES.get(builder or "", builder or "the other builder")
    return _sentence(name) if start else name


def other_verdict(other: Mapping[str, Any]) -> str:
    """The other builder's decision (an ``other_builder`` note) in theme colours."""
    cached = other.get("cached")
    if cached is None:
        # BuildKit makes no step of an image setting; the classic builder makes one,
        # whose decision the step alone does not tell.
        return "[dim]no step[/]" if other.get("builder") == "buildkit" else "a step of its own"
    return "[b $success]HIT[/]" if cached else "[b $error]MISS[/]"


def parting_topic(step: StepRecord) -> str | None:
    """What the two builders part on at ``step`` (a key of :data:`PARTING`), or None
    when this step's record says they decide alike."""
    kind = step.reason["kind"] if step.reason is not None else None
    if kind == "stage_skipped":
        return "stages"
    if kind == "merged":
        return "merged"
    if kind == "stale_reuse":
        return "transfer"
    if kind == "settings_not_keyed":
        return "settings"
    other = step.other
    if other is None:
        return None
    if other.get("cached") == step.cached and step.cached is not None:
        return None
    # Every other difference this build records is about image settings: a setting
    # that is no step under BuildKit, or a classic miss BuildKit would not have.
    return "settings"


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
        # The advice read per build: its report, or the one line why there is none.
        self.advice: dict[int, AdviceReport | str] = {}
        self._asked: set[int] = set()

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static("", id="explain")
            yield Static("", id="builders")
            yield Static("", id="advice")
            yield Static("", id="tour")

    def on_mount(self) -> None:
        self.refresh_explanation()

    def watch_step(self) -> None:
        self.refresh_explanation()

    def watch_build(self) -> None:
        self.want_advice()

    def want_advice(self) -> None:
        """Asks for the advice on the followed build's Dockerfile, unless it is known."""
        build = self.build
        if build is None or not self.is_mounted:
            return
        if build.id in self.advice or build.id in self._asked:
            return
        # The screen reads one at a time: a newer request cancels the older ones, which
        # are asked again when followed again.
        self._asked = {build.id}
        self.post_message(AdviceRequested(build))

    def show_advice(self, build_id: int, report: AdviceReport | None, error: str | None) -> None:
        """Takes in the advice read for a build (or why there is none)."""
        self._asked.discard(build_id)
        self.advice[build_id] = report if report is not None else (error or "no advice")
        self.refresh_explanation()

    @property
    def current_advice(self) -> AdviceReport | None:
        """The advice on the followed build's Dockerfile, once read."""
        if self.build is None:
            return None
        found = self.advice.get(self.build.id)
        return found if isinstance(found, AdviceReport) else None

    def advice_text(self) -> str:
        """The advice section: one line per piece of advice ("" with no build followed)."""
        build = self.build
        if build is None:
            return ""
        found = self.advice.get(build.id)
        head = "[b]Advice on this Dockerfile[/b]"
        if found is None:
            return f"{head}\n[dim]Replaying the builds of build #{build.id}'s Dockerfile…[/]"
        if isinstance(found, str):
            return f"{head}\n[dim]{escape(found)}[/]"
        lines = [
            f"[b]Advice on {escape(found.dockerfile)}[/b] [dim]({found.builds} builds,"
            f" {found.replayable} replayable)[/]"
        ]
        if not found.advice:
            lines.append("No advice: nothing to group or reorder.")
        for a in found.advice:
            saving = fmt.saving(a)
            lines.append(
                f"[b]line {a.line}[/b] [$accent]{a.rule}[/]: {escape(a.message)}"
                + (f"\n  [dim]saving: {escape(saving)}[/]" if saving else "")
            )
        if found.advice:
            lines.append("[dim]a: the rewrites as diffs, and their proof[/]")
        return "\n".join(lines)

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
        # A new build is new history: every piece of advice may read otherwise now.
        self.advice.clear()
        self._asked.clear()
        self.want_advice()
        self.refresh_explanation()

    def example_for(self, stop: TourStop) -> tuple[BuildRecord, StepRecord] | None:
        """A recorded step that illustrates ``stop``: in a rebuild (a build with hits, or
        for the builders' parting one the other builder would have hit), oldest first."""
        for build in reversed(self.builds):
            if not stop.parting and not any(s.cached for s in build.steps):
                continue  # a first build misses everywhere and illustrates nothing
            for s in build.steps:
                if stop.parting:
                    if self._parts_on_copy(s):
                        return build, s
                elif stop.want_hit:
                    if s.cached is True and s.instruction.split()[:1] in (["COPY"], ["ADD"]):
                        return build, s
                elif s.cached is False and s.reason is not None and s.reason["kind"] in stop.kinds:
                    return build, s
        return None

    @staticmethod
    def _parts_on_copy(step: StepRecord) -> bool:
        """A COPY/ADD the other builder decided otherwise, hit against miss."""
        other = step.other
        return (
            step.instruction.split()[:1] in (["COPY"], ["ADD"])
            and step.cached is not None
            and other is not None
            and other.get("cached") is not None
            and other.get("cached") != step.cached
        )

    def builders_text(self, build: BuildRecord | None, step: StepRecord | None) -> str:
        """What the other builder would have decided at ``step`` and why the two part
        there ("" when the record does not say which builder decided or what the other
        would have done)."""
        if step is None:
            return ""
        builder = build.builder if build is not None else None
        other = step.other
        if other is None and builder not in BUILDER_NAMES:
            return ""
        other_name = (
            other.get("builder")
            if other is not None
            else ("classic" if builder == "buildkit" else "buildkit")
        )
        this = builder_name(builder) if builder in BUILDER_NAMES else "its builder"
        lines = [f"[b]And under {builder_name(other_name)}?[/b]"]
        head = f"This build was decided by {this}'s rules."
        if builder is None or builder not in BUILDER_NAMES:
            head = "This build does not say which builder's rules decided it."
        note = step.reason
        if note is not None and note.get("kind") in (
            "settings_not_keyed",
            "merged",
            "stage_skipped",
        ):
            head += f" {escape(_sentence(fmt.describe_reason(note)))}."
        lines.append(head)
        if other is None:
            lines.append(
                f"{builder_name(other_name, start=True)} would decide the same here,"
                " as far as this step's record tells."
            )
        else:
            lines.append(
                f"Under {builder_name(other_name)}: {other_verdict(other)}. "
                f"{escape(_sentence(fmt.describe_reason(other)))}."
            )
        topic = parting_topic(step)
        if topic is not None:
            lines.append(f"[b]Why they part here:[/b] {escape(PARTING[topic])}")
        return "\n".join(lines)

    @staticmethod
    def hit_text(build: BuildRecord | None) -> str:
        """Why a step hit, in the words of the rules that decided it."""
        if build is not None and build.builder == "buildkit":
            return (
                "A cache entry exists for the same step on the same parent state (for RUN "
                "the same command, env, user, working directory, network and mounts; for "
                "COPY/ADD the same options and a checksum of the files), so its result was "
                "reused and nothing ran. Image settings such as LABEL are not part of it."
            )
        return (
            "A cache entry exists with the same parent state and the same step "
            "configuration (instruction, build args in scope, config, and for "
            "COPY/ADD a checksum of the files), so its result was reused and "
            "nothing ran."
        )

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
        if (
            step.cached is None
            and step.reason is None
            and not step.instruction.upper().startswith("FROM")
        ):
            return head + (
                "Under BuildKit's rules this instruction is no cached step: it only sets "
                "the image config, which no later step's key reads."
            )
        if step.cached is None:
            return head + (
                "FROM starts a stage: it picks the base image, and every later key "
                "chains on that image's config. A different base misses everything."
            )
        if step.cached:
            return head + self.hit_text(build)
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
        builders = self.builders_text(self.build, self.step)
        section = self.query_one("#builders", Static)
        section.update(builders)
        section.display = bool(builders)
        advice = self.query_one("#advice", Static)
        text = self.advice_text()
        advice.update(text)
        advice.display = bool(text)
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
            if stop.parting and s.other is not None:
                if s.reason is not None:
                    lines.append(f"  {escape(fmt.describe_reason(s.reason))}")
                lines.append(
                    f"  Under {builder_name(s.other.get('builder'))}: {other_verdict(s.other)}. "
                    f"{escape(_sentence(fmt.describe_reason(s.other)))}"
                )
            elif s.cached is False:
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
