"""Config problems: each one carries its dotted path, where it came from and what was expected."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass

MAX_REPORTED = 100  # problems listed in a report; a file of thousands of unknown keys says how many more


@dataclass(frozen=True)
class Origin:
    """Where a value was written: a file (and line) or a command-line override."""

    source: str
    line: int | None = None

    def __str__(self) -> str:
        return f"{self.source}:{self.line}" if self.line is not None else self.source


@dataclass(frozen=True)
class ConfigProblem:
    path: str  # dotted path in the experiment, "" for the whole document
    message: str  # plain words: what is wrong and what was expected
    origin: Origin | None = None

    def __str__(self) -> str:
        """One line: control characters (a key or value may hold newlines or escapes) are shown escaped."""
        where = f"  ({self.origin})" if self.origin else ""
        return printable(f"{self.path or '<experiment>'}: {self.message}{where}")


class ConfigError(Exception):
    """Every problem found in an experiment, reported together."""

    def __init__(self, problems: Iterable[ConfigProblem], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        super().__init__(self.report())

    def report(self, limit: int = MAX_REPORTED) -> str:
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} in experiment"
        if self.source:
            head += f" {printable(self.source)}"
        lines = [f"  - {p}" for p in self.problems[:limit]]
        if count > limit:
            lines.append(f"  ... and {count - limit} more")
        return head + ":\n" + "\n".join(lines)


def printable(text: str) -> str:
    """`text` with every non-printable character (newline, escape, NUL, ...) written as a Python escape."""
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def did_you_mean(word: object, choices: Iterable[str]) -> str:
    """A ' (did you mean 'x'?)' suffix when `word` is close to one of `choices`."""
    close = difflib.get_close_matches(str(word), list(choices), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def dotted(loc: Iterable[object]) -> str:
    """('data', 'shard', 0, 'x') -> 'data.shard[0].x'"""
    out = ""
    for part in loc:
        if isinstance(part, int) and not isinstance(part, bool):  # a list index (a `true:` key is no index)
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out
