"""The registry of model specs that :func:`featviz.models.load` reads.

Each source module registers its models when imported (``featviz.models`` imports its own
in one place); a project registers its own the same way::

    from featviz import models
    models.register(models.ModelSpec("my_net", build=lambda request: MyNet(), input_size=64))
    model = models.load("my_net", weights="my_net.pth")

A name is looked up in this order: a name with a registered prefix (``"timm:..."``) goes to
that family; then a registered spec by its name or one of its aliases; then the listed
families, in the order they were registered. A spec may take a name that a listed family has
too (your own ``"resnet50"``): it comes first. Two specs, two families or two prefixes of one
name are an error.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import FeatvizError, UnknownNameError, unknown
from .spec import CatalogRow, Family, ModelSpec

# name or alias -> spec; family name -> family, in registration order (the lookup order)
_SPECS: dict[str, ModelSpec] = {}
_FAMILIES: dict[str, Family] = {}


class DuplicateModelError(FeatvizError, ValueError):
    """A model or family registered under a name that is taken already."""


def register(entry: ModelSpec | Family) -> ModelSpec | Family:
    """Add a model spec or a family to the names :func:`featviz.models.load` takes.

    Args:
        entry: a :class:`ModelSpec` (its name and aliases become names of models) or a
            :class:`Family` (its members, or every name after its prefix).

    Returns:
        ``entry``, so that a module can keep what it registered.

    Raises:
        DuplicateModelError: a name, alias, family name or prefix is taken already.
    """
    if isinstance(entry, ModelSpec):
        _register_spec(entry)
    elif isinstance(entry, Family):
        _register_family(entry)
    else:
        raise TypeError(f"register() takes a ModelSpec or a Family, got {type(entry).__name__}")
    return entry


def _register_spec(spec: ModelSpec) -> None:
    names = (spec.name, *spec.aliases)
    if len(set(names)) < len(names):
        raise DuplicateModelError(f"model {spec.name!r} names one name twice: {names}")
    for name in names:
        owner = _owner(name)
        if owner:
            raise DuplicateModelError(
                f"cannot register model {name!r} of family {spec.family!r}: the name is taken "
                f"by {owner}; featviz.models.unregister({name!r}) first, or choose another name")
    _SPECS.update(dict.fromkeys(names, spec))


def _register_family(family: Family) -> None:
    if family.name in _FAMILIES:
        raise DuplicateModelError(f"a model family named {family.name!r} is registered "
                                  f"already; featviz.models.unregister({family.name!r}) first")
    if family.prefix:
        clash = [n for n in _SPECS if n.startswith(f"{family.prefix}:")]
        clash += [f"family {f.name!r}" for f in _FAMILIES.values() if f.prefix == family.prefix]
        if clash:
            raise DuplicateModelError(f"cannot register family {family.name!r}: names "
                                      f"{family.prefix}:... are taken by {clash[0]}")
    for alias in family.aliases:
        owner = _owner(alias)
        if owner:
            raise DuplicateModelError(f"cannot register family {family.name!r}: its alias "
                                      f"{alias!r} is taken by {owner}")
    _FAMILIES[family.name] = family


def _owner(name: str) -> str:
    """Who has ``name`` already, in words; empty when nobody does (a listed family's
    members are not asked: that would import its library, and a spec may take their names)."""
    if name in _SPECS:
        return f"model {_SPECS[name].name!r} of family {_SPECS[name].family!r}"
    prefix, colon, _ = name.partition(":")
    for family in _FAMILIES.values():
        if name in family.aliases:
            return f"an alias of family {family.name!r}"
        if colon and family.prefix == prefix:
            return f"family {family.name!r} (every name {prefix}:...)"
    return ""


def unregister(name: str) -> None:
    """Remove a registered spec (with all its names) or family.

    Args:
        name: a spec's name or alias, or a family's name.
    """
    if name in _SPECS:
        spec = _SPECS[name]
        for key in (spec.name, *spec.aliases):
            _SPECS.pop(key, None)
    elif name in _FAMILIES:
        del _FAMILIES[name]
    else:
        raise unknown("registered model or family", name, [*_SPECS, *_FAMILIES])


def find(name: str) -> tuple[ModelSpec, str] | None:
    """The spec ``name`` denotes and the member name its builder is asked for (the name
    after a prefix, a renamed member's own name), or None when nothing registered has it.

    Args:
        name: a model name as :func:`featviz.models.load` takes it.
    """
    prefix, colon, rest = name.partition(":")
    if colon:
        for family in _FAMILIES.values():
            if family.prefix == prefix:
                return family.spec(rest), rest
    if name in _SPECS:
        return _SPECS[name], _SPECS[name].name
    for family in _listed():
        member = family.aliases.get(name, name)
        if member in set(family.members()):
            return family.spec(member), member
    return None


def lookup(name: str) -> ModelSpec:
    """The spec of the model ``name``.

    Args:
        name: a model name as :func:`featviz.models.load` takes it.

    Raises:
        UnknownNameError: nothing registered has the name; the message lists the closest.
    """
    found = find(name)
    if found is None:
        raise unknown_model(name)
    return found[0]


def unknown_model(name: str) -> UnknownNameError:
    """The error for a model name nothing registered has, listing the closest names.

    Args:
        name: the name asked for.
    """
    usages = [f.usage or f"{f.prefix}:NAME" for f in _FAMILIES.values() if f.prefix]
    hint = "names featviz.models.available() lists" + (f", or {', '.join(usages)}"
                                                       if usages else "")
    return unknown("model", name, available(), hint=hint)


def source_of(name: str) -> str | None:
    """The prefix of a model name that a registered family takes (``"timm"`` for
    ``"timm:resnet18"``), None for any other name.

    Args:
        name: a model name.
    """
    prefix, colon, _ = name.partition(":")
    if colon and any(f.prefix == prefix for f in _FAMILIES.values()):
        return prefix
    return None


def option_takers() -> str:
    """The models whose builders take ``load``'s extra keyword arguments, in words
    (``"timm: and hf:"``), for the error that says where such arguments go."""
    takers = [f"{f.prefix}:" for f in _FAMILIES.values() if f.prefix and f.takes_options]
    takers += [f.name for f in _listed() if f.takes_options]
    takers += sorted({s.name for s in _SPECS.values() if s.takes_options})
    if len(takers) < 2:
        return "".join(takers) or "no"
    return ", ".join(takers[:-1]) + " and " + takers[-1]


def _listed() -> Iterable[Family]:
    return [f for f in _FAMILIES.values() if f.members is not None]


def available() -> list[str]:
    """Names :func:`featviz.models.load` takes besides those after a prefix: the registered
    specs and their aliases, and the members of the listed families (torchvision's
    classifiers), sorted."""
    names = set(_SPECS)
    for family in _listed():
        names.update(family.members())
        names.update(family.aliases)
    return sorted(names)


def catalog() -> list[CatalogRow]:
    """One row per model :func:`featviz.models.load` takes: each name
    :func:`available` gives, sorted, then one row per open family (``"timm:NAME"``).

    A row gives the name, its family, the input size of its default weights, where those
    weights come from and a one-line description; :func:`format_catalog` makes a table of
    them.
    """
    rows = []
    for name in available():
        spec = lookup(name)
        about = spec.description if name == spec.name else f"another name for {spec.name}"
        rows.append(CatalogRow(name, spec.family, spec.weights.input_size or spec.input_size,
                               spec.weights.description, about))
    rows += [CatalogRow(f.usage or f"{f.prefix}:NAME", f.name, None, f.weights, f.description)
             for f in _FAMILIES.values() if f.prefix]
    return rows


def format_catalog(rows: Iterable[CatalogRow] | None = None) -> str:
    """The catalog as a plain-text table, one model a line (what ``featviz models`` prints).

    Args:
        rows: the rows to show; default all of :func:`catalog`.
    """
    rows = list(catalog() if rows is None else rows)
    header = CatalogRow("name", "family", None, "weights", "description")
    cells = [[r.name, r.family, "-" if r.input_size is None else str(r.input_size),
              r.weights, r.description] for r in rows]
    table = [[header.name, header.family, "size", header.weights, header.description], *cells]
    # the first four columns padded; the description, last, as long as it is
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = []
    for row in table:
        lead = "  ".join(c.ljust(w) for c, w in zip(row[:4], widths, strict=True))
        lines.append(f"{lead}  {row[4]}".rstrip())
    return "\n".join(lines)
