"""Source spans and DplError: every user mistake is reported as FILE:LINE:COL with a caret."""
from __future__ import annotations

from dataclasses import dataclass

# Source text of every file read, so an error can show its line long after parsing.
SOURCES: dict[str, str] = {}


@dataclass(frozen=True)
class Span:
    file: str
    line: int
    col: int
    end_col: int | None = None

    def __str__(self):
        return f"{self.file}:{self.line}:{self.col}"


class DplError(Exception):
    """A user error with the position of the innermost construct that failed."""

    def __init__(self, message: str, span: Span | None = None):
        super().__init__(message)
        self.message = message
        self.span = span
        self.chain: list[tuple[Span, str, int]] = []  # DPL calls that led here, innermost first
        self.omitted = 0
        self.notes: list[tuple[Span, str]] = []  # other places the message refers to, each shown with a caret

    def at(self, span: Span | None) -> "DplError":
        """Attach a position if none is known yet (the innermost position wins)."""
        if self.span is None:
            self.span = span
        return self

    def called_from(self, span: Span, name: str) -> None:
        """Record that the failing code ran in `name`, called at `span` (innermost first)."""
        if span is None:  # called from Python (the API, the tools), not from DPL code
            return
        if self.chain and self.chain[-1][:2] == (span, name):  # direct recursion: one line with a count
            self.chain[-1] = (span, name, self.chain[-1][2] + 1)
        elif len(self.chain) < 20:
            self.chain.append((span, name, 1))
        else:
            self.omitted += 1

    def format(self) -> str:
        if self.span is None:
            return f"dpl: error: {self.message}"
        lines = [f"{self.span}: {self.message}"]
        lines += _excerpt(self.span)
        for span, note in self.notes:
            lines += [f"{span}: {note}", *_excerpt(span)]
        for span, name, times in self.chain:
            lines.append(f"  in {name}, called from {span}" + (f" ({times} times)" if times > 1 else ""))
        if self.omitted:
            lines.append(f"  ... and {self.omitted} more calls")
        return "\n".join(lines)

    def __str__(self):
        return self.format()


def _excerpt(span: Span) -> list[str]:
    text = SOURCES.get(span.file)
    if text is None:
        return []
    src = text.splitlines()
    if not 1 <= span.line <= len(src):
        return []
    raw_line = src[span.line - 1]
    line = raw_line.expandtabs(4)
    indent = len(raw_line[:span.col - 1].expandtabs(4))  # the caret lines up with tabs expanded the same way
    width = max(1, span.end_col - span.col) if span.end_col else 1
    return [f"    {line}", "    " + " " * indent + "^" * min(width, max(1, len(line) - indent))]


# Words of other languages that a newcomer types, and what DPL spells instead.
FOREIGN = {"True": " (did you mean `true`?)", "False": " (did you mean `false`?)",
           "None": " (DPL has no `None`: a function without `return` gives no value)",
           "def": " (did you mean `fn`?)", "lambda": " (did you mean `fn(x) = ...`?)"}


def suggest(name: str, candidates) -> str:
    """' (did you mean `x`?)' for the closest candidate, or ''."""
    import difflib

    if name in FOREIGN:
        return FOREIGN[name]
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.7)
    return f" (did you mean `{close[0]}`?)" if close else ""
