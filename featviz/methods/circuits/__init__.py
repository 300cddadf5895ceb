"""Circuits: how a unit is built from the units before it (the Distill Circuits thread,
2020-21): expanded weights between two layers, weight views (first-layer filters, a unit's
strongest connections beside their feature visualizations, weight factors), parametric
stimuli with tuning curves, and families of units found by scanning a layer with them.
"""

from .expanded import CircuitError, Connection, ExpandedWeights, expanded_weights
from .factors import WeightFactors, factor_figure, weight_factors
from .families import FamilyScan, scan
from .stimuli import (
    FAMILIES,
    Family,
    centre_surround,
    curves,
    draw,
    gabors,
    get_family,
    high_low,
    lines,
)
from .tuning import TuningCurve, parse_unit, stimulus_box, tuning
from .views import Circuit, RenderCache, circuit, first_layer, first_layer_filters, weight_map

__all__ = [
    "CircuitError", "Connection", "ExpandedWeights", "expanded_weights",
    "WeightFactors", "factor_figure", "weight_factors",
    "Circuit", "RenderCache", "circuit", "first_layer", "first_layer_filters", "weight_map",
    "FAMILIES", "Family", "centre_surround", "curves", "draw", "gabors", "get_family",
    "high_low", "lines",
    "TuningCurve", "parse_unit", "stimulus_box", "tuning",
    "FamilyScan", "scan",
]
