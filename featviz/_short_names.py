"""Short module names, imported on first use: ``featviz.hooks`` is ``featviz.core.hooks``,
``featviz.gallery`` is ``featviz.face.gallery``, ``featviz.param.color`` is
``featviz.core.param.color``.

Every public module or package directly under ``core``, ``methods`` and ``face`` has a short
name, found by listing those folders rather than kept in a table. :class:`ShortNameFinder` sits
first on ``sys.meta_path`` and answers ``import featviz.<short>[.sub]`` by importing the tier
module and handing the import system that very object, so both names give one module (one copy
of each class) and nothing is loaded before it is asked for.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import os
import sys
from importlib.machinery import ModuleSpec
from types import CodeType, ModuleType

TIERS = ("core", "methods", "face")  # where short names come from; on a clash the lower wins
KEPT = {"cifar": "models.cifar"}  # short names from before the tiers outside those folders


def _public_modules(folder: str) -> list[str]:
    """The importable public modules and packages directly in ``folder``, sorted."""
    found = []
    with os.scandir(folder) as entries:
        for entry in entries:
            name, ext = os.path.splitext(entry.name)
            if name.startswith("_") or not name.isidentifier():
                continue
            module = entry.is_file() if ext == ".py" else (
                not ext and os.path.isfile(os.path.join(entry.path, "__init__.py")))
            if module:
                found.append(name)
    return sorted(found)


def derive(package_dir: str) -> dict[str, str]:
    """Short name -> path below the package (``"gallery" -> "face.gallery"``) for every public
    module directly under :data:`TIERS`, plus :data:`KEPT`. Names of the package's own top-level
    modules (``errors``, ``models``, the tiers) are left out: those are real modules."""
    taken = set(_public_modules(package_dir))
    names: dict[str, str] = {}
    for tier in TIERS:
        for name in _public_modules(os.path.join(package_dir, tier)):
            if name not in taken:
                names.setdefault(name, f"{tier}.{name}")
    return {**names, **KEPT}


class _SameModule(importlib.abc.Loader):
    """Loads ``featviz.<short>`` by importing the tier module and returning it unchanged."""

    def __init__(self, real: str) -> None:
        self.real = real
        self.real_spec: ModuleSpec | None = None

    def create_module(self, spec: ModuleSpec) -> ModuleType:
        module = importlib.import_module(self.real)
        self.real_spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # the import system has just stamped the alias's spec on the shared module; a reload
        # or a pickle must still see where the module really lives
        module.__spec__ = self.real_spec

    def get_code(self, fullname: str) -> CodeType:
        """Refuse ``python -m featviz.<short>`` with the real name to run: as ``__main__`` the
        module would resolve its relative imports against the short name's package."""
        raise ImportError(f"{fullname} is {self.real}: run python -m {self.real}")


class ShortNameFinder(importlib.abc.MetaPathFinder):
    """Maps ``<package>.<short>[.sub]`` to ``<package>.<tier>.<short>[.sub]``."""

    def __init__(self, package: str, aliases: dict[str, str]) -> None:
        self.package = package
        self.aliases = aliases

    def real_name(self, fullname: str) -> str | None:
        """The tier module's name for a short ``fullname``, or None if it is not one."""
        head, _, rest = fullname.partition(".")
        short, _, sub = rest.partition(".")
        if head != self.package or short not in self.aliases:
            return None
        return ".".join(part for part in (head, self.aliases[short], sub) if part)

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> ModuleSpec | None:
        """A spec whose loader hands back the tier module; None for any other name."""
        real = self.real_name(fullname)
        # finding (not importing) the real module lets a missing one fail under its short name
        spec = importlib.util.find_spec(real) if real else None
        if spec is None:
            return None
        return importlib.util.spec_from_loader(
            fullname, _SameModule(real), origin=spec.origin,
            is_package=spec.submodule_search_locations is not None)


def install(package: str, aliases: dict[str, str]) -> None:
    """Put a finder for ``package``'s short names first on ``sys.meta_path`` (ahead of the
    path finder, which would load a second copy from the parent's folder), replacing one left
    by an earlier import of the package."""
    # by class name: a re-imported package brings a new class
    sys.meta_path[:] = [f for f in sys.meta_path if not (
        type(f).__name__ == ShortNameFinder.__name__ and getattr(f, "package", None) == package)]
    sys.meta_path.insert(0, ShortNameFinder(package, aliases))
