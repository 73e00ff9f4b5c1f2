"""The advice on a build's Dockerfile in full: each rewrite as a diff, and its proof
(the recorded builds replayed, as the Dockerfile is and as rewritten).

Opened from the Learn view (``a``) once the advice for the selected build is read; it
shows the report it is given and calls nothing.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.markup import escape
from textual.screen import ModalScreen
from textual.widgets import Footer, Static

from lamina.core import Advice, AdviceReport, Proof
from lamina.tui import format as fmt

BUILDERS = {"buildkit": "BuildKit's", "classic": "the classic builder's"}


def diff_markup(diff: str) -> str:
    """A unified diff with added lines in green and removed ones in red."""
    out = []
    for line in diff.splitlines():
        shown = escape(line)
        if shown.endswith("\\"):
            # A trailing backslash (a continued line) would escape the closing tag.
            shown += " "
        if line.startswith(("+++", "---")):
            out.append(f"[b]{shown}[/]")
        elif line.startswith("@@"):
            out.append(f"[$accent]{shown}[/]")
        elif line.startswith("+"):
            out.append(f"[$success]{shown}[/]")
        elif line.startswith("-"):
            out.append(f"[$error]{shown}[/]")
        else:
            out.append(shown)
    return "\n".join(out)


def _clip(text: str, width: int = 46) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def proof_markup(proof: Proof) -> str:
    """The replay, one line per build: what changed, what ran, what would have."""
    focus = set(proof.focus)
    rows = [
        f"[b]Proof:[/b] the last {len(proof.builds)} builds replayed under"
        f" {BUILDERS.get(proof.builder, proof.builder)} rules, from an empty cache"
    ]
    if proof.compared:
        rows.append(
            f"The cache model reproduces {proof.agreed} of the {proof.compared} recorded builds"
            " of this Dockerfile."
        )
    rows.append(
        "[dim]  build  what changed                         steps run (focus): now → rewritten[/]"
    )
    for b in proof.builds:
        changed = ", ".join(list(b.changed[:3]) + list(b.args[:2]))
        more = len(b.changed) + len(b.args) - min(3, len(b.changed)) - min(2, len(b.args))
        if more > 0:
            changed += f" +{more}"
        what = changed or ("first build" if b is proof.builds[0] else "nothing")
        now = [s for s in b.ran_now if s in focus]
        after = [s for s in b.ran_after if s in focus]
        rows.append(
            f"  #{b.build_id:<4} {escape(_clip(what, 34)):<34}  {len(b.ran_now)} ({len(now)})"
            f" → {len(b.ran_after)} ({len(after)})"
        )
    if proof.focus:
        rows.append("Focus: " + "; ".join(escape(_clip(f)) for f in proof.focus))
    if proof.note:
        rows.append(f"[dim]{escape(proof.note)}[/]")
    return "\n".join(rows)


def advice_markup(advice: Advice) -> str:
    """One piece of advice in full."""
    rows = [
        f"[b $accent]line {advice.line}  {advice.rule}[/]",
        escape(advice.message),
    ]
    rows.extend(f"  · {escape(e)}" for e in advice.evidence)
    saving = fmt.saving(advice)
    if saving:
        rows.append(f"[b]Saving:[/b] {escape(saving)}")
    if advice.diff:
        rows.append("")
        rows.append(diff_markup(advice.diff))
    else:
        rows.append("[dim]No rewrite: the change needs a choice lamina cannot make.[/]")
    if advice.proof is not None:
        rows.append("")
        rows.append(proof_markup(advice.proof))
    return "\n".join(rows)


class AdviceScreen(ModalScreen[None]):
    """Every piece of advice on one Dockerfile, with its rewrite and proof."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q", "close", "Close", tooltip="Close the advice", id="advice.close"),
    ]

    def __init__(self, report: AdviceReport, build_id: int | None = None) -> None:
        super().__init__()
        self.report = report
        self.build_id = build_id

    def compose(self) -> ComposeResult:
        r = self.report
        where = f" (selected: build #{self.build_id})" if self.build_id is not None else ""
        head = (
            f"[b]Advice on {escape(r.dockerfile)}[/b]{where}\n"
            f"{r.builds} recorded builds, {r.replayable} replayable;"
            f" `lamina advise --diff` prints every rewrite as one patch"
        )
        with Vertical(id="advice-dialog"):
            yield Static(head, id="advice-head")
            with VerticalScroll(id="advice-body"):
                if not r.advice:
                    yield Static("No advice: nothing to group or reorder.", classes="advice-item")
                for a in r.advice:
                    yield Static(advice_markup(a), classes="advice-item")
                if r.notes:
                    yield Static(
                        "\n".join(f"[dim]note: {escape(n)}[/]" for n in r.notes),
                        classes="advice-item",
                    )
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#advice-body", VerticalScroll).focus()

    def action_close(self) -> None:
        self.dismiss(None)
