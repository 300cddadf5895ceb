"""A Microscope for any model (after OpenAI Microscope, 2020): one static, linkable site with
every view of every unit of chosen layers, browsable from the file system.

:func:`microscope` builds it (:mod:`.build`): a sweep of every unit's feature visualization
and top-k dataset examples, each layer's DeepDream, caricatures, neuron groups, tuning curves,
strongest connections and top classes (:mod:`.tasks`), each unit's diversity facets; then the
pages (:mod:`.pages`) from the data folder (:mod:`.store`). Resumable after any interruption
and split over ``torchrun`` ranks, in a ``quick`` or a ``full`` setting (:mod:`.presets`).
"""

from .build import MicroscopeResult, microscope
from .pages import write_site
from .presets import PRESETS

__all__ = ["microscope", "MicroscopeResult", "write_site", "PRESETS"]
