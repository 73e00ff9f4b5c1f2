"""An instruction's words, expanded, and where the instruction is when one is wrong."""

from __future__ import annotations

from pathlib import Path

from lamina.core.dockerfile.instructions import Instruction
from lamina.core.dockerfile.quote import go_quote
from lamina.core.dockerfile.shell import Lexer
from lamina.core.errors import BuildError, DockerfileError


class Words:
    """Variable expansion for one Dockerfile, with errors naming its path and line.

    Args:
        path: the Dockerfile (as the build names it).
        escape: its escape character (``# escape=`` directive).
    """

    def __init__(self, path: Path, escape: str) -> None:
        self.path = path
        self._lexer = Lexer(escape)

    def where(self, instruction: Instruction) -> str:
        """``<dockerfile>:<line>`` of an instruction."""
        return f"{self.path}:{instruction.line}"

    def fail(self, instruction: Instruction, message: str) -> BuildError:
        """A build error naming the instruction (for the caller to raise)."""
        return BuildError(f"{self.where(instruction)}: {instruction.keyword}: {message}")

    def word(self, instruction: Instruction, word: str, env: dict[str, str]) -> str:
        """``word`` with its variables expanded and quotes removed.

        Raises:
            DockerfileError: a malformed substitution, naming the line.
        """
        try:
            return self._lexer.process_word(word, env)
        except DockerfileError as exc:
            raise DockerfileError(exc.reason, str(self.path), instruction.line) from None

    def path_word(self, instruction: Instruction, word: str, env: dict[str, str]) -> str:
        """``word`` expanded as a path in the image.

        Raises:
            DockerfileError: a malformed substitution, naming the line.
            BuildError: a NUL byte in it (no path can hold one).
        """
        text = self.word(instruction, word, env)
        if "\0" in text:
            raise self.fail(instruction, no_nul(text))
        return text

    def words(self, instruction: Instruction, word: str, env: dict[str, str]) -> list[str]:
        """``word`` expanded and split into words (``EXPOSE $PORTS``).

        Raises:
            DockerfileError: a malformed substitution, naming the line.
        """
        try:
            return self._lexer.process_words(word, env)
        except DockerfileError as exc:
            raise DockerfileError(exc.reason, str(self.path), instruction.line) from None


def no_nul(path: str) -> str:
    """The message refusing ``path``, which holds a NUL byte."""
    return f"{go_quote(path)}: a path cannot hold a NUL byte"
