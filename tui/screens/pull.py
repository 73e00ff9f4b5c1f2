"""The pull screen (``P``): enter a reference, see the plan, confirm, watch each layer.

Three steps in one modal: the reference (Enter plans it), the plan (what the store has
already, by chainID or diffID, what each missing blob weighs, the total against the
image's size; ``y`` pulls, ``n`` goes back), then one progress bar per blob that moves.
It dismisses with the new image's ID, and the main screen reloads so the image appears
in the layer graph beside the layers it shares.

The plan and the pull run in this screen's own thread workers, which post the messages
below; failures come back through ``on_worker_state_changed`` as one line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.markup import escape
from textual.message import Message
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, ProgressBar, Static
from textual.worker import Worker, WorkerState, get_current_worker

from lamina.core import (
    Engine,
    LaminaError,
    PullFinished,
    PullPlan,
    TransferEvent,
    TransferFinished,
    TransferProgressed,
    TransferStarted,
    short_digest,
)
from lamina.tui import format as fmt

HAVE = {"layer": "in store", "diff": "copy of a stored layer", "": "download"}
OUTCOMES = {
    "downloaded": "done",
    "resumed": "done (resumed)",
    "copied": "copied",
    "present": "in store",
}


@dataclass
class PullPlanned(Message):
    """The plan for the reference is ready."""

    plan: PullPlan


@dataclass
class PullProgressed(Message):
    """One transfer event of the running pull."""

    event: TransferEvent


@dataclass
class PullEnded(Message):
    """The pull finished (``image_id``) or failed (``message``)."""

    image_id: str | None
    message: str


def plan_text(plan: PullPlan) -> str:
    """The plan as the confirmation shows it (markup, user data escaped)."""
    rows = [
        f"[b]{escape(plan.reference)}[/b] ({escape(plan.platform)}) "
        f"into the {escape(plan.engine)} engine"
    ]
    if plan.image_present:
        rows.append("[$success]The image is already here: nothing to download.[/]")
    config = "in store" if plan.config_present else "download"
    rows.append(f"  {'config':<14}{fmt.size(plan.config_size):>10}  {config}")
    for layer in plan.layers:
        action = HAVE.get(layer.have, layer.have)
        if layer.shared_with:
            action += f", shared with {', '.join(layer.shared_with[:3])}"
        style = "$text-muted" if layer.present else "$warning"
        rows.append(
            f"  [{style}]{short_digest(layer.digest):<14}{fmt.size(layer.size):>10}  "
            f"{escape(action)}[/]"
        )
    rows.append(
        f"[b]Download {fmt.size(plan.download_bytes)}[/b] of {fmt.size(plan.image_bytes)} "
        f"({len(plan.fetches)} of {len(plan.layers) + 1} blobs)"
    )
    return "\n".join(rows)


class PullScreen(ModalScreen[str | None]):
    """Plan, confirm and run one pull.

    Args:
        engine: the engine to pull into (embedded store or Docker).
        reference: a reference to start with.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "confirm", "Pull", tooltip="Pull what the plan lists", id="pull.confirm"),
        Binding("n", "back", "Back", tooltip="Change the reference", id="pull.back"),
        Binding("escape", "close", "Close", tooltip="Stop and close", id="pull.close"),
    ]

    # "enter" (typing), "planning", "confirm", "pulling", "done"
    stage: reactive[str] = reactive("enter", bindings=True)

    def __init__(self, engine: Engine, reference: str = "") -> None:
        super().__init__()
        self.engine = engine
        self.reference = reference
        self.plan: PullPlan | None = None
        self.bars: dict[str, tuple[ProgressBar, Label]] = {}

    def compose(self) -> ComposeResult:
        with Vertical(id="pull-dialog"):
            yield Static("[b]Pull an image[/b]", id="pull-title")
            yield Input(value=self.reference, placeholder="registry/repository:tag", id="pull-ref")
            with VerticalScroll(id="pull-body"):
                yield Static(
                    "Enter a reference, then Enter to see what it would download.", id="pull-plan"
                )
                yield Vertical(id="pull-progress")
            yield Static("", id="pull-status")
            with Horizontal(id="pull-buttons"):
                yield Button("Pull (y)", variant="primary", id="pull-yes", disabled=True)
                yield Button("Close (esc)", id="pull-no")

    def on_mount(self) -> None:
        self.query_one("#pull-ref", Input).focus()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "confirm":
            return True if self.stage == "confirm" else None
        if action == "back":
            return True if self.stage == "confirm" else None
        return True

    def watch_stage(self, stage: str) -> None:
        self.query_one("#pull-yes", Button).disabled = stage != "confirm"
        self.query_one("#pull-ref", Input).disabled = stage not in ("enter",)

    # ---------------------------------------------------------------- actions

    @on(Input.Submitted, "#pull-ref")
    def _submitted(self, event: Input.Submitted) -> None:
        ref = event.value.strip()
        if not ref or self.stage != "enter":
            return
        self.reference = ref
        self.stage = "planning"
        self._status(f"Planning {escape(ref)}…")
        self.run_plan(ref)

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "pull-yes":
            self.action_confirm()
        else:
            self.action_close()

    def action_confirm(self) -> None:
        if self.stage != "confirm" or self.plan is None:
            return
        self.stage = "pulling"
        self._status("Pulling…")
        progress = self.query_one("#pull-progress", Vertical)
        for digest, total in self._moving(self.plan):
            label = Label(f"{short_digest(digest)}  waiting", classes="pull-label")
            bar = ProgressBar(total=max(total, 1), show_eta=False, classes="pull-bar")
            self.bars[digest] = (bar, label)
            progress.mount(Horizontal(label, bar, classes="pull-row"))
        self.run_pull(self.plan)

    def action_back(self) -> None:
        if self.stage == "confirm":
            self.plan = None
            self.stage = "enter"
            self.query_one("#pull-plan", Static).update("Enter a reference.")
            self.query_one("#pull-ref", Input).focus()

    def action_close(self) -> None:
        self.workers.cancel_group(self, "pull")
        self.dismiss(None)

    # ------------------------------------------------------------ what comes back

    def on_pull_planned(self, event: PullPlanned) -> None:
        self.plan = event.plan
        self.query_one("#pull-plan", Static).update(plan_text(event.plan))
        self.stage = "confirm"
        self._status("Pull it? [b]y[/b] pulls, [b]n[/b] goes back.")
        self.query_one("#pull-yes", Button).focus()

    def on_pull_progressed(self, event: PullProgressed) -> None:
        e = event.event
        if isinstance(e, TransferStarted | TransferProgressed | TransferFinished):
            row = self.bars.get(e.digest)
            if row is None:
                return
            bar, label = row
            if isinstance(e, TransferProgressed):
                bar.update(total=max(e.total, 1), progress=e.done)
                label.update(f"{short_digest(e.digest)}  {fmt.size(e.done)}/{fmt.size(e.total)}")
            elif isinstance(e, TransferFinished):
                bar.update(progress=bar.total or 1)
                label.update(f"{short_digest(e.digest)}  {OUTCOMES.get(e.outcome, e.outcome)}")

    def on_pull_ended(self, event: PullEnded) -> None:
        if event.image_id is None:
            self.stage = "enter"
            self._status(f"[$error]{escape(event.message)}[/]")
            return
        self.stage = "done"
        self.dismiss(event.image_id)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        error = event.worker.error
        message = str(error) if isinstance(error, LaminaError) else repr(error)
        self.stage = "enter"
        self._status(f"[$error]{escape(message)}[/]")
        self.query_one("#pull-ref", Input).focus()

    def _status(self, markup: str) -> None:
        self.query_one("#pull-status", Static).update(markup)

    @staticmethod
    def _moving(plan: PullPlan) -> list[tuple[str, int]]:
        sizes = {layer.digest: layer.size for layer in plan.layers}
        return [(d, sizes[d]) for d in plan.fetches if d in sizes]

    # ---------------------------------------------------------------- workers

    @work(thread=True, exclusive=True, exit_on_error=False, group="pull-plan")
    def run_plan(self, ref: str) -> None:
        """Works out the plan (manifests and, when missing, the config move)."""
        self.post_message(PullPlanned(self.engine.plan_pull(ref)))

    @work(thread=True, exclusive=True, exit_on_error=False, group="pull")
    def run_pull(self, plan: PullPlan) -> None:
        """Runs the pull, posting every transfer event."""
        worker = get_current_worker()
        image_id: str | None = None
        message = "the pull ended without a result"
        try:
            for event in self.engine.pull(plan, cancel=worker.cancelled_event):
                self.post_message(PullProgressed(event))
                if isinstance(event, PullFinished):
                    image_id = event.image_id
        except LaminaError as exc:
            message = str(exc)
        self.post_message(PullEnded(image_id, message))
