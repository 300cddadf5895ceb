"""A griffe extension for the API reference: featviz's docstrings name objects with Sphinx roles
(:class:`Objective`, :func:`~featviz.objectives.parse`), which Markdown would show as they are
typed. This turns each into a link to the object's entry where the reference has one, and into
plain code where it has none (an optional cross-reference: no warning, so `mkdocs build
--strict` stays clean).

A name is looked up as Sphinx would: as written (a short name such as ``featviz.objectives``
read as its home, ``featviz.core.objectives``), then relative to the object the docstring
belongs to and to each of its parents; a name a module imports is followed to its home.
``~`` shows only the last part of the name.
"""

from __future__ import annotations

import html
import importlib.util
import re
from pathlib import Path

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|data|mod|exc|obj|const):"
                  r"`(?P<bang>!)?(?P<tilde>~)?(?P<name>[\w.]+?)(?P<call>\(\))?`")


def _short_names(package_dir: Path) -> dict[str, str]:
    """featviz's short names (``"objectives" -> "core.objectives"``), from the same function
    that makes them, read from its file so that nothing imports torch here."""
    spec = importlib.util.spec_from_file_location("_featviz_short_names",
                                                  package_dir / "_short_names.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.derive(str(package_dir))


def _member(obj: griffe.Object | griffe.Alias, parts: list[str]):
    """The object at ``parts`` below ``obj``, following imports; None where there is none."""
    for part in parts:
        try:
            if obj.is_alias:
                obj = obj.final_target
            obj = obj.members[part]
        except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError, AttributeError):
            return None
    try:
        return obj.final_target if obj.is_alias else obj
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None


class SphinxRoles(griffe.Extension):
    """Rewrites the Sphinx roles of every docstring in the ``featviz`` package."""

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs) -> None:
        if pkg.name != "featviz" or pkg.filepath is None:
            return
        self.pkg = pkg
        self.shorts = _short_names(Path(pkg.filepath).parent)
        for obj in self._walk(pkg):
            if obj.docstring is not None and ":" in obj.docstring.value:
                obj.docstring.value = ROLE.sub(lambda m, o=obj: self._link(m, o),
                                               obj.docstring.value)

    def _walk(self, obj: griffe.Object):
        yield obj
        for member in obj.members.values():
            if not member.is_alias:
                yield from self._walk(member)

    def _find(self, name: str, scope: griffe.Object):
        """The object ``name`` means in a docstring of ``scope``, or None."""
        parts = name.lstrip(".").split(".")  # ".registry": from the scope, as any name
        if parts[0] == self.pkg.name:
            if len(parts) > 1 and parts[1] in self.shorts:
                parts = [parts[0], *self.shorts[parts[1]].split("."), *parts[2:]]
            return _member(self.pkg, parts[1:])
        while scope is not None:
            found = _member(scope, parts)
            if found is not None:
                return found
            scope = scope.parent
        return None

    def _link(self, match: re.Match, scope: griffe.Object) -> str:
        name = match["name"]
        shown = name.rsplit(".", 1)[-1] if match["tilde"] else name
        shown = f"`{shown}{match['call'] or ''}`"
        target = None if match["bang"] else self._find(name, scope)
        if target is None:
            return shown
        return (f'<autoref identifier="{html.escape(target.canonical_path)}" optional>'
                f"{shown}</autoref>")
