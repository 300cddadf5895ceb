"""Can this picture be trusted? Path similarity (Geirhos et al. 2023's sanity check), the
manipulated network that the check has to catch, and feature accentuation (Hamblin et al. 2024):
what in a given photo drives a unit."""

from .accentuation import Accentuation, accentuate
from .attribution import attribution_profiles
from .fooling import Agreement, Manipulated, SilentPath, silent_path, unchanged_on
from .paths import MEASURES, PathSimilarity, load_json, parse_unit, path_similarity, save_json
from .ranks import average_ranks, path_layers, spearman

__all__ = ["Accentuation", "accentuate", "attribution_profiles", "Agreement", "Manipulated",
           "SilentPath", "silent_path", "unchanged_on", "MEASURES", "PathSimilarity",
           "load_json", "parse_unit", "path_similarity", "save_json", "average_ranks",
           "path_layers", "spearman"]
