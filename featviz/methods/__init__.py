"""Methods built on the core (lucid's "recipes"): projections (deconvnet, guided backprop,
top-k dataset patches), occlusion, feature inversion, receptive fields, the feature-map viewer,
and the building blocks of interpretability: attribution to hidden layers, neuron groups,
activation grids and semantic dictionaries. They import from ``featviz.core`` and
``featviz.models``, never from ``featviz.face``."""
