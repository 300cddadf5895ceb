"""Models for featviz: a network plus its input normalization and layer aliases, and how to
load one by name.

Every model featviz renders takes images in [0, 1] (RGB, grayscale or any number of bands);
:class:`Preprocessed` wraps a network so that it applies its own normalization, while its
layers stay addressable under the network's own module paths (``"features.14"``,
``"inception4a"``) and any aliases (lucid's ``"mixed4a"``).

Models are data: a :class:`ModelSpec` per model (or a :class:`Family` of many) says how to
build it, what it takes and where its weights come from; :func:`load` reads the registry
(:mod:`.registry`) they are in. Each source module registers its own when imported; this
package imports them in one place, below, and only re-exports otherwise.
"""

from __future__ import annotations

# isort: off
# the sources, in the order load() consults them (and messages name them); each registers its
# models when imported, so a new family is one more module here
from . import torchvision_source, inception_v1, cifar, timm_source, hf_source  # noqa: F401
from . import vit  # noqa: F401
# isort: on

from .hf_source import wrap_hf as wrap_hf
from .imagenet import IMAGENET_MEAN as IMAGENET_MEAN
from .imagenet import IMAGENET_STD as IMAGENET_STD
from .inception_v1 import INCEPTION_V1_FILE as INCEPTION_V1_FILE
from .info import class_index as class_index
from .info import layer_table as layer_table
from .loading import from_source as from_source
from .loading import load as load
from .preprocess import Preprocessed as Preprocessed
from .preprocess import wrap as wrap
from .registry import DuplicateModelError as DuplicateModelError
from .registry import available as available
from .registry import catalog as catalog
from .registry import format_catalog as format_catalog
from .registry import lookup as lookup
from .registry import register as register
from .registry import source_of as source_of
from .registry import unregister as unregister
from .spatial import SpatialLayer as SpatialLayer
from .spatial import middle_layer as middle_layer
from .spatial import spatial_layers as spatial_layers
from .spec import Built as Built
from .spec import CatalogRow as CatalogRow
from .spec import Family as Family
from .spec import ModelSpec as ModelSpec
from .spec import Request as Request
from .spec import WeightsSource as WeightsSource
from .torchvision_source import FAMILY_LAYOUTS as FAMILY_LAYOUTS
from .torchvision_source import FIXED_SIZE_FAMILIES as FIXED_SIZE_FAMILIES
from .torchvision_source import LUCID_INCEPTION_V1 as LUCID_INCEPTION_V1
from .weights import load_state_dict_file as load_state_dict_file
from .weights import random_weights as random_weights
from .weights import read_state_dict as read_state_dict
