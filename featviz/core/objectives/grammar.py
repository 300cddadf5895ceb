"""Objective strings from the command line: the one parser, and the registry of kinds it reads.

A kind (``channel``, ``neuron``, ...) is one :func:`register` on its builder, which carries
what the grammar needs: the arguments (whether the first is a LAYER, how each is read, how many
may be left out), the help line of :data:`GRAMMAR` and the example its errors show.
:func:`terms` splits a string into :class:`Term` s (weight, kind, arguments) without building
anything; :func:`parse` builds the objective.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

from ...errors import ObjectiveSyntaxError, closest
from .base import Objective
from .files import load_vector

_HEADER = """objective strings: terms joined with '+' or '-', each with an optional 'WEIGHT*'
(kinds in any case; spaces around ':', '+', '-' and '*' do not matter):"""
_FOOTER = """  LAYER:C                   short for channel:LAYER:C where LAYER is no kind's name
  e.g. channel:features.14:12   or   mixed4a:476   or   channel:mixed4a:97 - 0.5*neuron:mixed4a:3
A '+' or '-' starts a new term only where one follows it ([WEIGHT*]KIND:); anywhere else it
belongs to the term: a range 0-63, a weight -0.5* or 1e-3*, a '-' inside a layer name."""
_HELP_COLUMN = 28  # where the help of each kind starts in GRAMMAR

_NUMBER = r"(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?"
# a '+' or '-' (or a run of them, '+-') followed by the head of a term, [WEIGHT*]NAME: (or
# a weight that lacks its '*', 0.5channel:, so that the error can say so)
_JOIN = re.compile(rf"[-+](?:\s*[-+])*(?=\s*(?P<weight>{_NUMBER}\s*\*)?\s*"
                   rf"(?P<kind>(?:{_NUMBER}\s*)?[a-z_]\w*)\s*:)", re.IGNORECASE)
_HEAD = re.compile(rf"\s*(?:(?P<weight>{_NUMBER})\s*\*)?(?P<body>.*)", re.IGNORECASE | re.DOTALL)
# more channels than any layer has: a typo (0-9999999999), refused before a list is built
MAX_CHANNELS = 1 << 20


class Term(NamedTuple):
    """One term of an objective string.

    ``weight`` carries the sign before the term (``a - 0.5*b``: b's is -0.5), ``kind`` is in
    lower case, ``args`` are the ':'-separated arguments, stripped (a last argument that takes
    the rest, direction's FILE, keeps its own ':'s). ``text`` (the term as written) and
    ``spec`` (the whole string) are for errors.
    """

    weight: float
    kind: str
    args: tuple[str, ...]
    text: str = ""
    spec: str = ""

    def error(self, why: str) -> ObjectiveSyntaxError:
        """The error to raise for this term, naming the string, the term and the grammar.

        Args:
            why: what is wrong and what to write instead.
        """
        return _syntax(self.spec, why, self.text)

    def usage(self) -> str:
        """What this kind takes, with an example that uses the user's layer where given."""
        kind = KINDS[self.kind]
        named = self.args and self.args[0] and not self.args[0].isdigit()
        return f"{self.kind} takes {kind.takes}, e.g. " + repr(
            kind.example.format(layer=self.args[0] if named else "features.14"))

    def read(self) -> list[Any]:
        """The arguments as the builder takes them (a C as a number, a FILE loaded)."""
        kind = KINDS[self.kind]
        return [arg.read(self, text) for arg, text in zip(kind.args, self.args, strict=False)]

    def build(self) -> Objective:
        """The objective of this term, its weight left out."""
        return KINDS[self.kind].build(*self.read())


class Arg(NamedTuple):
    """One ':'-separated argument of a kind: its name in the grammar, how its text is read
    (given the term, for errors), and whether it takes the rest of the term."""

    name: str
    read: Callable[[Term, str], Any]
    rest: bool = False  # a FILE path may hold ':' (C:\\...): it is everything after LAYER


def _whole(what: str) -> Callable[[Term, str], int]:
    def read(t: Term, text: str) -> int:
        try:
            return int(text)
        except ValueError:
            raise t.error(f"{what} must be a whole number, got {text!r}; {t.usage()}") from None

    return read


def _channels(t: Term, text: str) -> int | list[int]:
    chans = parse_channels(text, t.spec, t.text)
    return chans[0] if len(chans) == 1 else chans


LAYER = Arg("LAYER", lambda t, text: text)
C = Arg("C", _whole("C"))
CHANNELS = Arg("C", _channels)  # 12, a range 0-63 or a list 1,5,9
X = Arg("X", _whole("X and Y"))
Y = Arg("Y", _whole("X and Y"))
FILE = Arg("FILE", lambda t, text: load_vector(text), rest=True)


@dataclass(frozen=True)
class Kind:
    """A kind of the grammar: its builder and what :func:`register` gave for it."""

    name: str
    build: Callable[..., Objective]
    args: tuple[Arg, ...]
    optional: int
    help: str
    example: str
    takes: str

    @property
    def arity(self) -> tuple[int, ...]:
        """The argument counts it accepts (at least the first, with a last that takes the rest)."""
        n = len(self.args)
        return (n - self.optional, n) if self.optional else (n,)

    @property
    def layer_first(self) -> bool:
        """Whether its first argument is a LAYER (a '-' after it may be part of the name)."""
        return bool(self.args) and self.args[0] is LAYER

    def form(self) -> str:
        """``name:ARG:ARG``, the optional arguments in brackets (``neuron:LAYER:C[:X:Y]``)."""
        names = [a.name for a in self.args]
        need = len(names) - self.optional
        tail = f"[:{':'.join(names[need:])}]" if self.optional else ""
        return ":".join([self.name, *names[:need]]) + tail

    def listing(self) -> str:
        """This kind's lines of :data:`GRAMMAR`."""
        indent = "\n" + " " * _HELP_COLUMN
        return f"  {self.form():<{_HELP_COLUMN - 3}} " + indent.join(self.help.splitlines())

    def check(self, t: Term) -> None:
        """Raise an error showing the right form when ``t`` has a wrong number of arguments or
        an empty one.

        Args:
            t: a term of this kind, its arguments as split at every ':'.
        """
        rest = bool(self.args) and self.args[-1].rest
        if rest:
            if len(t.args) >= len(self.args) and all(t.args[:len(self.args)]):
                return
            raise t.error(t.usage())
        if len(t.args) in self.arity and all(t.args):
            return
        why = t.usage()
        if len(t.args) > max(self.arity):  # most often two terms that the string failed to join
            why += ("; if this is two terms, join them with '+' or '-' and write a weight as "
                    "WEIGHT*KIND:..., e.g. 'channel:L:12 - 0.5*channel:L:20'")
        raise t.error(why)


# kind -> how to read it, in the order GRAMMAR lists them; builders register themselves
KINDS: dict[str, Kind] = {}
B = TypeVar("B", bound=Callable[..., Objective])


def register(*args: Arg, help: str, example: str, optional: int = 0, takes: str | None = None,
             name: str | None = None) -> Callable[[B], B]:
    """Make a builder a kind of the objective strings (a decorator; the builder is unchanged).

    ``@register(LAYER, CHANNELS, help="mean activation of channel C",
    example="channel:{layer}:12")`` on ``channel`` makes ``"channel:mixed4a:476"`` call
    ``channel("mixed4a", 476)``.

    Args:
        *args: one :class:`Arg` per ':'-separated argument, in the builder's order: LAYER
            first for a kind of one layer (a '-' after it may then be part of the layer's name),
            C, CHANNELS, X, Y, FILE, or an Arg of your own.
        help: its line of :data:`GRAMMAR` (a newline continues it under itself).
        example: the example its errors show; ``{layer}`` becomes the user's layer.
        optional: how many of the last arguments may be left out, all together.
        takes: what the errors say it takes; the forms with and without the optional
            arguments by default (``LAYER:C or LAYER:C:X:Y``).
        name: the kind as written in strings; the builder's ``kind`` or name by default.
    """

    def add(build: B) -> B:
        kind = (name or getattr(build, "kind", build.__name__)).lower()
        if not re.fullmatch(r"[a-z_]\w*", kind, re.ASCII):
            raise ValueError(f"objective kind {kind!r} must be a name: a letter or '_', then "
                             "letters, digits or '_'")
        if kind in KINDS:
            raise ValueError(f"objective kind {kind!r} is already registered")
        counts = (len(args) - optional, len(args)) if optional else (len(args),)
        said = takes or " or ".join(":".join(a.name for a in args[:n]) for n in counts)
        KINDS[kind] = Kind(kind, build, tuple(args), optional, help, example, said)
        return build

    return add


def grammar_text() -> str:
    """The grammar of objective strings, with every registered kind (:data:`GRAMMAR`)."""
    return "\n".join([_HEADER, *(k.listing() for k in KINDS.values()), _FOOTER])


def __getattr__(name: str) -> str:
    # GRAMMAR is computed when read, so that it lists kinds registered after import
    if name == "GRAMMAR":
        return grammar_text()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _syntax(spec: str, why: str, term: str = "") -> ObjectiveSyntaxError:
    where = f", term {term!r}" if term and term != spec.strip() else ""
    return ObjectiveSyntaxError(f"cannot read objective {spec!r}{where}: {why}\n{grammar_text()}")


def parse_channels(text: str, spec: str = "", term: str = "") -> list[int]:
    """Read ``"12"``, ``"0-63"`` or ``"1,5,9"`` (or a mix, ``"0-3,8"``) as a list of ints.

    Args:
        text: the channels as written.
        spec: the objective string they come from, named by errors (``text`` by default).
        term: the term of ``spec`` they come from, named by errors.
    """
    out: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m:
            raise _syntax(spec or text, f"channel {part.strip()!r} is not a number (12), a range "
                                        "(0-63) or a list (1,5,9)", term)
        lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if hi < lo:
            raise _syntax(spec or text, f"range {part.strip()!r} runs backwards (write "
                                        f"{hi}-{lo})", term)
        if len(out) + hi - lo + 1 > MAX_CHANNELS:
            raise _syntax(spec or text, f"{part.strip()!r} names more than {MAX_CHANNELS} "
                                        "channels; no layer has that many", term)
        out.extend(range(lo, hi + 1))
    return out


def _pieces(text: str) -> tuple[str | None, str, list[str]]:
    """A term's weight as written (or None), its kind as written and its arguments."""
    head = _HEAD.fullmatch(text)
    kind, *args = [part.strip() for part in head["body"].split(":")]
    return head["weight"], kind, args


def _joins(before: str, m: re.Match) -> bool:
    """Whether the '+'/'-' found by ``m`` ends the term written so far, ``before``: not the '-'
    of an exponent (``1e-3*...``), nor a '-' inside a layer name (``channel:block-1:3``: a '-'
    in the LAYER place followed by a name that is no objective kind)."""
    if m["weight"] and re.search(r"[\d.]e$", before, re.IGNORECASE):
        return False
    if m.group() != "-" or m["weight"] or m["kind"].lower() in KINDS:
        return True
    _, kind, args = _pieces(before)
    known = KINDS.get(kind.lower())
    return not (known is not None and known.layer_first and len(args) == 1)


def _split_terms(spec: str) -> list[tuple[float, str]]:
    """The terms of ``spec`` as (sign, text as written): the sign from the '+'/'-' run before
    each (a leading one included), the text with its weight still in front."""
    terms: list[tuple[float, str]] = []
    start, sign = 0, 1.0
    for m in _JOIN.finditer(spec):
        before = spec[start:m.start()]
        if not _joins(before, m):
            continue
        if before.strip():
            terms.append((sign, before))
        sign = -1.0 if m.group().count("-") % 2 else 1.0
        start = m.end()
    terms.append((sign, spec[start:]))
    return terms


def _unknown_kind(kind: str) -> str:
    kinds = ", ".join(KINDS)
    if not kind:
        return f"a term needs a kind before its first ':' ({kinds})"
    if re.match(_NUMBER, kind):
        return (f"{kind!r} is no objective kind; a weight is written WEIGHT*KIND:..., "
                "e.g. '0.5*channel:features.14:12'")
    near = closest(kind.lower(), KINDS, n=1)
    return f"unknown objective kind {kind!r}; did you mean {near[0]!r}? (kinds: {kinds})"


# the channels of the short form LAYER:C: a number, a range or a list of them
_CHANNEL_SPEC = re.compile(r"\s*\d[\d\s,-]*")


def _short_channel(kind: str, args: list[str]) -> tuple[str, list[str]]:
    """``LAYER:C`` (lucid's and lucent's ``"mixed4a:476"``) as ``channel:LAYER:C``, where the
    first piece is no kind's name; any other term as it is."""
    if kind.lower() not in KINDS and len(args) == 1 and kind \
            and not re.match(_NUMBER, kind) and _CHANNEL_SPEC.fullmatch(args[0]):
        return "channel", [kind, args[0]]
    return kind, args


def _term(spec: str, sign: float, text: str) -> Term:
    """One term read and checked: a known kind with the right number of arguments."""
    weight, kind, args = _pieces(text)
    kind, args = _short_channel(kind, args)
    t = Term(sign * float(weight or 1), kind.lower(), tuple(args), text.strip(), spec)
    if t.kind not in KINDS:
        raise t.error(_unknown_kind(kind))
    found = KINDS[t.kind]
    found.check(t)
    if found.args and found.args[-1].rest:
        last = len(found.args) - 1
        t = t._replace(args=(*t.args[:last], ":".join(t.args[last:])))
    return t


def _each_term(spec: str) -> Iterator[Term]:
    """The terms of ``spec`` one by one, so that a caller building each as it comes reports
    the first bad term first."""
    if not isinstance(spec, str) or not spec.strip():
        raise _syntax(str(spec), "it is empty")
    dangling = re.search(r"[+*]\s*$", spec)
    if dangling:
        raise _syntax(spec, f"it ends with {dangling.group().strip()!r}, which needs a term "
                            "after it")
    for sign, text in _split_terms(spec):
        yield _term(spec, sign, text)


def terms(spec: str) -> list[Term]:
    """The terms of an objective string (grammar in :data:`GRAMMAR`), each with its weight,
    kind and arguments, checked as far as can be without building them: a known kind with
    the right number of arguments. ``"channel:mixed4a:97 - 0.5*neuron:mixed4a:3"`` gives
    ``Term(1.0, "channel", ("mixed4a", "97"), ...)`` and ``Term(-0.5, "neuron", ...)``.

    Args:
        spec: the objective string; a malformed one raises an :class:`ObjectiveSyntaxError`.
    """
    return list(_each_term(spec))


def _weighted(weight: float, o: Objective) -> Objective:
    return o if weight == 1 else -o if weight == -1 else weight * o


def parse(spec: str) -> Objective:
    """Turn a command-line objective string into an :class:`Objective`.

    ``"channel:features.14:12"``, ``"neuron:mixed4a:3:5:5"``,
    ``"Channel : mixed4a : 97 - 0.5 * neuron:mixed4a:3"``, ... (grammar in :data:`GRAMMAR`).

    Args:
        spec: the objective string; a malformed one raises an :class:`ObjectiveSyntaxError`
            naming the offending term and the form it should take.
    """
    (first_weight, total), *rest = [(t.weight, t.build()) for t in _each_term(spec)]
    total = _weighted(first_weight, total)
    for weight, o in rest:  # 'a - 0.5*b' reads back as such, not as 'a + -0.5*b'
        total = total - _weighted(-weight, o) if weight < 0 else total + _weighted(weight, o)
    return total


def expand(spec: str) -> list[str]:
    """Split a ``channel:LAYER:RANGE`` string into one string per channel, for rendering a
    layer in several batches; any other string comes back as it is.

    Args:
        spec: the objective string.
    """
    split = _split_terms(spec)
    if len(split) == 1 and split[0][0] == 1:
        weight, kind, args = _pieces(split[0][1])
        kind, args = _short_channel(kind, args)
        if weight is None and kind.lower() == "channel" and len(args) == 2:
            return [f"channel:{args[0]}:{c}" for c in parse_channels(args[1], spec)]
    return [spec]
