"""``lamina completion bash|zsh|fish``: shell completion that cannot drift from the CLI.

The scripts are small shims: on every TAB they hand the command line so far to the
hidden verb ``lamina __complete --line LINE``, which walks the real argparse parser
(verbs, nested verbs, options, choices, which positional comes next) and prints the
candidates for the last word, one a line. Image references come from the current
engine, stage names from the Dockerfile ``-f`` names (else ``CONTEXT/Dockerfile``,
else ``./Dockerfile``); a word that is a path prints ``__files__`` and the shell
completes files itself. Nothing here lists a verb or a flag by hand.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from lamina.tui.cli.context import CliContext

FILES = "__files__"
HIDDEN = "__complete"

# Positionals and option values that name an image, and ones that name a path.
IMAGE_METAVARS = {
    "IMAGE",
    "IMAGE_A",
    "IMAGE_B",
    "SOURCE_IMAGE",
    "TARGET_IMAGE",
    "REPOSITORY[:TAG]",
    "NAME[:TAG]",
}
PATH_WORDS = {"FILE", "PATH", "DIR", "CONTEXT", "DOCKERFILE", "OUTPUT"}
PATH_DESTS = {"file", "output", "input", "context", "workspace", "ci_config"}

BASH = r"""# lamina completion for bash: source <(lamina completion bash)
_lamina() {
    local cur="${COMP_WORDS[COMP_CWORD]}"
    local line="${COMP_LINE:0:COMP_POINT}"
    local IFS=$'\n'
    local out
    out=($(lamina __complete --line "$line" 2>/dev/null))
    if [[ "${out[0]}" == "__files__" ]]; then
        COMPREPLY=($(compgen -f -- "$cur"))
        return
    fi
    # bash splits words at ':' (COMP_WORDBREAKS); candidates are whole words.
    local word="${line##*[[:space:]]}"
    local prefix="${word%"$cur"}"
    local candidate
    COMPREPLY=()
    for candidate in "${out[@]}"; do
        [[ "$candidate" == "$word"* ]] && COMPREPLY+=("${candidate#"$prefix"}")
    done
}
complete -o default -F _lamina lamina
"""

ZSH = r"""#compdef lamina
# lamina completion for zsh: source <(lamina completion zsh)
_lamina() {
    local -a out
    out=("${(@f)$(lamina __complete --line "${BUFFER[1,CURSOR]}" 2>/dev/null)}")
    if [[ "${out[1]}" == "__files__" ]]; then
        _files
        return
    fi
    compadd -Q -- "${out[@]}"
}
if (( $+functions[compdef] )); then
    compdef _lamina lamina
fi
"""

FISH = r"""# lamina completion for fish: lamina completion fish | source
function __lamina_complete
    set -l out (lamina __complete --line (commandline -cp) 2>/dev/null)
    if test "$out[1]" = "__files__"
        __fish_complete_path (commandline -ct)
    else
        printf '%s\n' $out
    end
end
complete -c lamina -f -a '(__lamina_complete)'
"""

SCRIPTS = {"bash": BASH, "zsh": ZSH, "fish": FISH}


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Adds ``lamina completion`` and the hidden ``lamina __complete``."""
    p = sub.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh or fish)",
        description=(
            "Print a completion script. bash: source <(lamina completion bash); zsh: "
            "source <(lamina completion zsh); fish: lamina completion fish | source."
        ),
    )
    p.add_argument("shell", choices=sorted(SCRIPTS))
    p.set_defaults(func=cmd_completion)
    # No help=: argparse then leaves the verb out of `lamina --help`.
    hidden = sub.add_parser(HIDDEN)
    hidden.add_argument("--line", default="")
    hidden.set_defaults(func=cmd_complete)


def cmd_completion(args: argparse.Namespace, ctx: CliContext) -> int:
    """Prints the script for ``args.shell``."""
    sys.stdout.write(SCRIPTS[args.shell])
    return 0


def cmd_complete(args: argparse.Namespace, ctx: CliContext) -> int:
    """Prints the candidates for the last word of ``--line``, one a line."""
    from lamina.tui.cli import make_parser

    for candidate in candidates(make_parser(), args.line, ctx):
        print(candidate)
    return 0


def _split(line: str) -> tuple[list[str], str]:
    """The finished words after ``lamina``, and the word being typed."""
    try:
        words = shlex.split(line)
    except ValueError:
        words = line.split()
    if line and not line[-1].isspace() and words:
        cur = words.pop()
    else:
        cur = ""
    return words[1:], cur


def _subparsers(
    parser: argparse.ArgumentParser,
) -> argparse._SubParsersAction[argparse.ArgumentParser] | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _option(parser: argparse.ArgumentParser, word: str) -> argparse.Action | None:
    name = word.split("=", 1)[0]
    for action in parser._actions:
        if name in action.option_strings:
            return action
    return None


def _takes_value(action: argparse.Action) -> bool:
    return action.nargs != 0 and not isinstance(
        action, (argparse._StoreTrueAction, argparse._StoreFalseAction, argparse._HelpAction)
    )


def _visible_options(parser: argparse.ArgumentParser) -> list[str]:
    out: list[str] = []
    for action in parser._actions:
        if action.help == argparse.SUPPRESS:
            continue
        out.extend(s for s in action.option_strings if s.startswith("--") or len(s) == 2)
    return out


def _is_path(action: argparse.Action) -> bool:
    metavar = action.metavar if isinstance(action.metavar, str) else ""
    return metavar in PATH_WORDS or action.dest in PATH_DESTS


def _is_image(action: argparse.Action) -> bool:
    metavar = action.metavar if isinstance(action.metavar, str) else ""
    return metavar in IMAGE_METAVARS


def image_refs(ctx: CliContext) -> list[str]:
    """Tags and short IDs of the current engine's images (nothing if it cannot open)."""
    from lamina.core import LaminaError, short_digest

    try:
        images = ctx.engine.images()
    except (LaminaError, OSError):
        return []
    out: list[str] = []
    for image in images:
        out.extend(image.tags)
    for image in images:
        out.append(short_digest(image.id).removeprefix("sha256:"))
    return list(dict.fromkeys(out))


def stage_names(words: list[str]) -> list[str]:
    """The named stages of the Dockerfile a ``build`` command line names."""
    from lamina.core import LaminaError, parse_dockerfile

    dockerfile: Path | None = None
    positionals = []
    i = 0
    while i < len(words):
        word = words[i]
        if word in ("-f", "--file") and i + 1 < len(words):
            dockerfile = Path(words[i + 1])
            i += 2
            continue
        if word.startswith("--file="):
            dockerfile = Path(word.split("=", 1)[1])
        elif not word.startswith("-"):
            positionals.append(word)
        i += 1
    if dockerfile is None:
        context = Path(positionals[-1]) if len(positionals) > 1 else Path(".")
        dockerfile = context / "Dockerfile"
    try:
        result = parse_dockerfile(dockerfile.read_text(encoding="utf-8"), str(dockerfile))
    except (OSError, UnicodeDecodeError, LaminaError):
        return []
    names = []
    for node in result.children:
        if node.value == "from" and len(node.args) >= 3 and node.args[-2].lower() == "as":
            names.append(node.args[-1])
    return names


def _values(action: argparse.Action, words: list[str], ctx: CliContext) -> list[str]:
    if action.choices:
        return [str(c) for c in action.choices]
    if action.dest == "target":
        return stage_names(words)
    if _is_image(action):
        return image_refs(ctx)
    if _is_path(action):
        return [FILES]
    return []


def candidates(parser: argparse.ArgumentParser, line: str, ctx: CliContext) -> list[str]:
    """What can come as the last word of ``line`` (a ``lamina …`` command line).

    Args:
        parser: lamina's parser (``make_parser()``).
        line: the command line up to the cursor.
        ctx: for image references, the engine ``--engine`` selects.
    """
    words, cur = _split(line)
    current = parser
    positional = 0
    verb_words: list[str] = []
    pending: argparse.Action | None = None
    for word in words:
        if pending is not None:
            if pending.dest == "engine":
                ctx.engine_kind = word
            pending = None
            continue
        if word.startswith("-"):
            action = _option(current, word)
            if action is not None and _takes_value(action) and "=" not in word:
                pending = action
            elif action is not None and action.dest == "engine" and "=" in word:
                ctx.engine_kind = word.split("=", 1)[1]
            continue
        subs = _subparsers(current)
        if subs is not None and word in subs.choices and positional == 0:
            current = subs.choices[word]
            verb_words = []
            continue
        positional += 1
        verb_words.append(word)
    if pending is not None:
        return _filter(_values(pending, words, ctx), cur)
    if cur.startswith("-"):
        if cur.startswith("--") and "=" in cur:
            action = _option(current, cur)
            name = cur.split("=", 1)[0]
            if action is None:
                return []
            return _filter([f"{name}={v}" for v in _values(action, words, ctx) if v != FILES], cur)
        return _filter(_visible_options(current), cur)
    subs = _subparsers(current)
    out: list[str] = []
    if subs is not None and positional == 0:
        out.extend(name for name in subs.choices if not name.startswith("__"))
        if current is parser:
            out.extend(image_refs(ctx))  # `lamina IMAGE` opens the app on it
    positionals = [
        a
        for a in current._actions
        if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
    ]
    index = positional
    for action in positionals:
        many = action.nargs in ("*", "+", argparse.REMAINDER)
        if index == 0 or many:
            out.extend(_values(action, words, ctx))
            break
        index -= 1
    return _filter(out, cur)


def _filter(values: list[str], cur: str) -> list[str]:
    if values == [FILES]:
        return values
    return [v for v in dict.fromkeys(values) if v.startswith(cur)]
