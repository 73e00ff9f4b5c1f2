"""Confirmations: the prune plan and the what-if prediction, each a ``ModalScreen[bool]``."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import Button, Static

from lamina.core import BuildRecord, PrunePlan, StepRecord
from lamina.tui import format as fmt
from lamina.tui.widgets.learn import builder_name


class _Confirm(ModalScreen[bool]):
    """A yes/no dialog; ``y``/Enter confirms, ``n``/Escape cancels."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Confirm", tooltip="Go ahead", id="confirm.yes"),
        Binding("n,escape", "answer(False)", "Cancel", tooltip="Do nothing", id="confirm.no"),
    ]

    title_text = ""
    confirm_label = "Confirm"

    @property
    def offers_confirm(self) -> bool:
        """Whether there is anything to confirm (else only Cancel is shown)."""
        return True

    def body(self) -> str:
        raise NotImplementedError

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # Confirming is hidden when there is nothing to go ahead with.
        return not (action == "answer" and parameters == (True,) and not self.offers_confirm)

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Static(f"[b]{self.title_text}[/b]", id="dialog-title")
            with VerticalScroll(id="dialog-body"):
                yield Static(self.body(), id="dialog-text")
            with Horizontal(id="dialog-buttons"):
                if self.offers_confirm:
                    yield Button(f"{self.confirm_label} (y)", variant="error", id="yes")
                yield Button("Cancel (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class ConfirmPruneScreen(_Confirm):
    """Shows exactly what a dry-run prune plan removes and frees."""

    title_text = "Prune dangling images and their layers?"
    confirm_label = "Prune"

    def __init__(self, plan: PrunePlan) -> None:
        super().__init__()
        self.plan = plan
        self.lines, self.freed = fmt.plan_lines(plan)

    def body(self) -> str:
        if not self.lines:
            return "Nothing to prune: no dangling images or unreferenced layers."
        items = "\n".join(f"  • {escape(line)}" for line in self.lines)
        return f"This removes [b]{escape(fmt.plan_summary(self.plan))}[/b]:\n{items}"


class WhatIfScreen(_Confirm):
    """Shows a dry-run prediction and offers to build for real."""

    title_text = "What if you rebuilt now?"
    confirm_label = "Build"

    def __init__(
        self,
        build: BuildRecord,
        steps: list[StepRecord],
        ok: bool,
        message: str,
        builder: str | None = None,
    ) -> None:
        super().__init__()
        self.build, self.steps, self.ok, self.message = build, steps, ok, message
        # Whose decisions were predicted, as the engine said (None: it did not say).
        self.builder = builder

    def predicted_by(self) -> str:
        """Whose decisions these are and why those ("" when the engine did not say)."""
        if self.builder is None:
            return ""
        why = (
            f"the builder build #{self.build.id} ran with"
            if self.build.builder == self.builder
            else "the configured builder"
        )
        return f"Predicted under {builder_name(self.builder)}'s rules, {why}."

    @property
    def offers_confirm(self) -> bool:
        """A failed prediction offers no build: it would fail the same way."""
        return self.ok

    def body(self) -> str:
        if not self.ok:
            return f"[$error]The prediction failed:[/] {escape(self.message)}"
        hits = sum(1 for s in self.steps if s.cached is True)
        misses = sum(1 for s in self.steps if s.cached is False)
        unknown = sum(1 for s in self.steps if s.cached is None and s.reason)
        rows = [f"Build #{self.build.id} would have {hits} HIT and {misses} MISS:"]
        if unknown:
            rows[0] = (
                f"Build #{self.build.id} would have {hits} HIT and {misses} MISS; "
                f"{unknown} step(s) cannot be predicted (?):"
            )
        if self.predicted_by():
            rows.insert(0, f"[dim]{escape(self.predicted_by())}[/]")
        for s in self.steps:
            reason = fmt.describe_reason(s.reason)
            rows.append(
                f"  {fmt.verdict(s):<4} {escape(' '.join(s.instruction.split()))}"
                + (f"\n        [dim]{escape(reason)}[/]" if reason else "")
            )
        return "\n".join(rows)
