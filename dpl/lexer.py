"""A Pygments lexer for DPL: highlighting in `dpl repl`, and `pygmentize -l dpl` once DPL is installed."""
from __future__ import annotations

from pygments.lexer import RegexLexer, bygroups, words
from pygments.token import Comment, Keyword, Name, Number, Operator, Punctuation, String, Text, Whitespace

from .builtins import BUILTINS, CONSTANTS
from .parser import RESERVED

_OPERATOR_WORDS = ("and", "or", "not")
_CONSTANT_WORDS = ("true", "false")
KEYWORDS = tuple(sorted(RESERVED - set(_OPERATOR_WORDS) - set(_CONSTANT_WORDS)))


class DplLexer(RegexLexer):
    """Keywords as LANGUAGE.md §2 reserves them; `max`/`as`/`over` stay names (they are keywords only in clauses)."""

    name = "DPL"
    aliases = ["dpl"]
    filenames = ["*.dpl"]

    tokens = {
        "root": [
            (r"[ \t\r\n]+", Whitespace),
            (r"#.*$", Comment.Single),
            (r'"[^"\n]*"?', String.Double),
            (r"(fn)(\s+)([A-Za-z_]\w*)", bygroups(Keyword.Declaration, Whitespace, Name.Function)),
            (r"(module)(\s+)([A-Za-z_]\w*)", bygroups(Keyword.Declaration, Whitespace, Name.Class)),
            (r"(param)(\s+)([A-Za-z_]\w*)", bygroups(Keyword.Declaration, Whitespace, Name.Variable)),
            (r"(use)(\s+)([A-Za-z_]\w*)", bygroups(Keyword.Namespace, Whitespace, Name.Namespace)),
            (words(_CONSTANT_WORDS, suffix=r"\b"), Keyword.Constant),
            (words(_OPERATOR_WORDS, suffix=r"\b"), Operator.Word),
            (words(KEYWORDS, suffix=r"\b"), Keyword),
            (words(tuple(sorted(BUILTINS)) + tuple(sorted(CONSTANTS)), suffix=r"\b"), Name.Builtin),
            (r"[A-Za-z_]\w*", Name),
            (r"((\d+\.\d*|\.\d+)([eE][+-]?\d+)?|\d+([eE][+-]?\d+)?)[jJ]", Number),  # imaginary: `2.5j`
            # `1e-8` is one number, `.5` too; a float has a point or an exponent
            (r"(\d+\.\d*|\.\d+)([eE][+-]?\d+)?|\d+[eE][+-]?\d+", Number.Float),
            (r"\d+", Number.Integer),
            (r"\*\*|<=|>=|==|!=|[-+*/%^@<>=~]", Operator),
            (r"[()\[\]{},:;.]", Punctuation),
            (r".", Text),
        ],
    }
