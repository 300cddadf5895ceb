"""MkDocs hooks: files the site shows that live outside docs/, added to the build, not copied.

- ``examples/figures/NAME.png`` is served as ``figures/NAME.png`` (a page under docs/ links
  ``figures/NAME.png``, one in a subfolder ``../figures/NAME.png``);
- ``examples/quickstart.ipynb`` is the tutorial page ``quickstart.ipynb``, which the
  mkdocs-jupyter plugin renders (without running it).

So each of them has one copy in git, the one the examples, the README and the notebook test
use. This runs before the plugins' own ``on_files`` (mkdocs-jupyter turns ``.ipynb`` files
into pages there), hence the priority.
"""

from __future__ import annotations

from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File, Files

EXAMPLES = "examples"
FIGURES = "figures"  # examples/figures/ -> figures/ in the site
NOTEBOOK = "quickstart.ipynb"  # examples/quickstart.ipynb -> the page quickstart.ipynb


def outside_files(root: Path) -> list[tuple[str, Path]]:
    """(path in the site's docs, file in the repository) for every file the hook adds."""
    examples = root / EXAMPLES
    found = [(f"{FIGURES}/{png.name}", png) for png in sorted((examples / FIGURES).glob("*.png"))]
    return [*found, (NOTEBOOK, examples / NOTEBOOK)]


@event_priority(100)
def on_files(files: Files, config) -> Files:
    root = Path(config.config_file_path).resolve().parent
    for uri, source in outside_files(root):
        if files.get_file_from_path(uri) is not None:
            raise ValueError(f"docs/{uri} duplicates {source.relative_to(root)}: delete it, "
                             "docs/hooks.py adds that file to the site")
        # each uri is also its path below examples/: mkdocs reads examples/<uri> and publishes
        # it as <uri>
        files.append(File(uri, str(root / EXAMPLES), config.site_dir, config.use_directory_urls))
    return files

