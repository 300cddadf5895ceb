"""Dictionary features: sparse autoencoders trained on a layer's stored activation vectors
(:mod:`featviz.methods.atlas_store`), measured the way the SAE literature measures them, and
shown the way featviz shows a neuron (direction renders, top-k dataset patches, top classes).

- :mod:`.sae`: the dictionary itself (TopK or ReLU, the common ``W_enc, b_enc, W_dec, b_dec``
  layout), saved, loaded, or taken from a state_dict trained elsewhere;
- :mod:`.training`: training it from a store, streamed and resumable;
  :mod:`.classic`: scikit-learn's NMF or dictionary learning for small layers;
- :mod:`.measures`: FVU, L0, dead features, and the model's top-1 with the layer spliced;
- :mod:`.features`: a feature as an objective, its top dataset patches and top classes (the
  same search gives a neuron's); :mod:`.minded`: how single-minded a unit's top patches are.
"""

from ._units import Example, UnitExamples
from .classic import fit_classic
from .features import (
    DictionaryExamples,
    dictionary_feature,
    example_patches,
    feature_directions,
    feature_examples,
    top_classes,
    unit_field,
)
from .measures import Measures, SpliceAccuracy, measure, splice, splice_accuracy
from .minded import (
    Minded,
    MindedScores,
    judge_layer,
    layer_mindedness,
    mean_pairwise_cosine,
    pick_units,
    single_mindedness,
)
from .sae import SparseAutoencoder
from .training import TrainResult, held_out_images, train

__all__ = [
    "SparseAutoencoder",
    "train", "TrainResult", "held_out_images", "fit_classic",
    "measure", "Measures", "splice", "splice_accuracy", "SpliceAccuracy",
    "dictionary_feature", "feature_directions", "feature_examples", "example_patches",
    "top_classes", "unit_field", "DictionaryExamples", "UnitExamples", "Example",
    "single_mindedness", "layer_mindedness", "judge_layer", "mean_pairwise_cosine",
    "pick_units", "Minded", "MindedScores",
]
