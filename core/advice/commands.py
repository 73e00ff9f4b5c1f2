"""What a RUN's shell text does, read word by word: which simple commands it chains,
which of them update a package index, install packages or clean up after them.

Only the top level of a POSIX shell command line is split (``&&``, ``||``, ``;``, ``|``,
``&`` and line breaks outside quotes, ``$(…)`` and backquotes); a command's words are
read as ``sh`` would split them, without expanding anything. Text this reader cannot
follow (an unterminated quote) gives no commands, so no rule fires on it.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

# Package managers by family: an index update and an install of the same family go
# together in one RUN.
_FAMILY = {
    "apt-get": "apt",
    "apt": "apt",
    "aptitude": "apt",
    "apk": "apk",
    "yum": "yum",
    "dnf": "yum",
    "microdnf": "yum",
    "zypper": "zypper",
    "pacman": "pacman",
}

# What removes a family's downloaded lists or caches inside the same RUN.
CLEANUP = {
    "apt": "rm -rf /var/lib/apt/lists/*",
    "apk": "rm -rf /var/cache/apk/*",
    "yum": "yum clean all",
    "zypper": "zypper clean -a",
    "pacman": "pacman -Scc --noconfirm",
}
_CLEANUP_RE = {
    "apt": re.compile(r"/var/lib/apt/lists|apt-get\s+clean|apt\s+clean"),
    "apk": re.compile(r"/var/cache/apk|--no-cache"),
    "yum": re.compile(r"(yum|dnf|microdnf)\s+clean|/var/cache/(yum|dnf)"),
    "zypper": re.compile(r"zypper\s+(clean|cc)"),
    "pacman": re.compile(r"pacman\s+-Sc|/var/cache/pacman"),
}

# Builtins whose effect reaches the commands after them in the same shell: commands
# that use one keep a subshell of their own when RUNs are joined.
_STATEFUL = frozenset(
    {"cd", "pushd", "popd", "export", "set", "unset", "exit", "umask", "trap", "alias",
     "source", ".", "shopt", "exec", "return", "readonly", "local", "ulimit"}
)  # fmt: skip


@dataclass(frozen=True)
class Command:
    """One simple command of a RUN.

    Attributes:
        text: the command as written (stripped).
        words: its words, quotes removed, leading ``VAR=value`` and ``sudo`` dropped.
    """

    text: str
    words: tuple[str, ...]

    @property
    def program(self) -> str:
        """The program's base name (``""`` for an empty command)."""
        return self.words[0].rsplit("/", 1)[-1] if self.words else ""


def split_commands(text: str) -> list[Command] | None:
    """The simple commands of a shell command line, in order; None when the text cannot
    be followed (unbalanced quotes or parentheses)."""
    parts: list[str] = []
    current: list[str] = []
    quote = ""
    depth = 0
    i = 0
    while i < len(text):
        c = text[i]
        if quote == "'":
            current.append(c)
            if c == "'":
                quote = ""
            i += 1
            continue
        if c == "\\" and i + 1 < len(text):
            current.append(text[i : i + 2])
            i += 2
            continue
        if quote == '"':
            current.append(c)
            if c == '"':
                quote = ""
            elif c == "$" and text[i + 1 : i + 2] == "(":
                depth += 1
                current.append("(")
                i += 1
            elif c == ")" and depth:
                depth -= 1
            i += 1
            continue
        if c in "'\"":
            quote = c
            current.append(c)
        elif c == "`":
            end = text.find("`", i + 1)
            if end < 0:
                return None
            current.append(text[i : end + 1])
            i = end
        elif c == "(":
            depth += 1
            current.append(c)
        elif c == ")":
            if not depth:
                return None
            depth -= 1
            current.append(c)
        elif depth == 0 and c in "&|;\n":
            # `&&`, `||`, `|`, `;`, `&` and line breaks end a simple command.
            parts.append("".join(current))
            current = []
            if text[i : i + 2] in ("&&", "||", ";;"):
                i += 1
        else:
            current.append(c)
        i += 1
    if quote or depth:
        return None
    parts.append("".join(current))
    out = []
    for part in parts:
        stripped = part.strip()
        if not stripped:
            continue
        out.append(Command(stripped, tuple(_words(stripped))))
    return out


def _words(text: str) -> list[str]:
    try:
        words = shlex.split(text, comments=False, posix=True)
    except ValueError:
        return text.split()
    # Leading assignments (DEBIAN_FRONTEND=noninteractive) and sudo change nothing here.
    while words and (re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0]) or words[0] == "sudo"):
        words = words[1:]
    if words[:1] in (["env"],):
        words = words[1:]
        while words and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0]):
            words = words[1:]
    return words


def family(command: Command) -> str | None:
    """The package-manager family of ``command`` (``apt``, ``apk``, ``yum``, ...)."""
    return _FAMILY.get(command.program)


def _operands(command: Command) -> list[str]:
    return [w for w in command.words[1:] if not w.startswith("-")]


def is_index_update(command: Command) -> bool:
    """Whether ``command`` only refreshes a package index (``apt-get update``, ``apk
    update``, ``yum makecache``, ``zypper refresh``, ``pacman -Sy``)."""
    fam = family(command)
    ops = _operands(command)
    if fam in ("apt", "apk"):
        return ops[:1] == ["update"] and len(ops) == 1
    if fam == "yum":
        return ops[:1] in (["makecache"], ["check-update"])
    if fam == "zypper":
        return ops[:1] in (["refresh"], ["ref"])
    if fam == "pacman":
        flags = "".join(w[1:] for w in command.words[1:] if w.startswith("-") and w[1:2] != "-")
        return "S" in flags and "y" in flags and not ops
    return False


def installs_packages(command: Command) -> bool:
    """Whether ``command`` installs system packages (``apt-get install``, ``apk add``...)."""
    fam = family(command)
    ops = _operands(command)
    if not ops and fam != "pacman":
        return False
    if fam == "apt":
        return ops[0] in ("install", "upgrade", "dist-upgrade", "full-upgrade", "build-dep")
    if fam == "apk":
        return ops[0] in ("add", "upgrade")
    if fam == "yum":
        return ops[0] in ("install", "upgrade", "update", "groupinstall", "reinstall")
    if fam == "zypper":
        return ops[0] in ("install", "in", "update", "up", "dist-upgrade", "dup")
    if fam == "pacman":
        return any(w.startswith("-S") for w in command.words[1:]) and bool(ops)
    return False


def has_cleanup(text: str, fam: str) -> bool:
    """Whether a RUN's text already removes what ``fam``'s installs download."""
    pattern = _CLEANUP_RE.get(fam)
    return bool(pattern and pattern.search(text))


def joinable(text: str) -> bool:
    """Whether a RUN's shell text can be chained with ``&&`` to another: no comment
    (which would swallow what follows) and no here-document."""
    commands = split_commands(text)
    if commands is None:
        return False
    return not any(re.search(r"(^|\s)#", c.text) for c in commands) and "<<" not in text


def stateful(text: str) -> bool:
    """Whether the text changes its shell's state for later commands (``cd``, ``export``,
    ``exit``...), so that chained after it another RUN's commands would see it."""
    commands = split_commands(text) or []
    return any(c.program in _STATEFUL for c in commands)


def chain(texts: list[str], indent: str = "    ") -> str:
    """Shell texts chained with ``&&``, one per continuation line; a text that changes
    its shell's state runs in a subshell of its own, as it did in its own RUN."""
    parts = []
    for text in texts:
        body = " ".join(line.strip() for line in text.splitlines() if line.strip())
        if stateful(body) or _sequenced(body):
            body = f"( {body} )"
        parts.append(body)
    return f" \\\n{indent}&& ".join(parts)


def _sequenced(text: str) -> bool:
    # `a || b && c` groups as `(a || b) && c`, which is what is meant; a `;` or a lone
    # `&` would not be: `a; b && c` runs c after a failing a.
    return bool(re.search(r";|(?<![&|])&(?!&)", _unquoted(text)))


def _unquoted(text: str) -> str:
    return re.sub(r"'[^']*'|\"(\\.|[^\"\\])*\"", "", text)
