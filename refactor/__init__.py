"""RefactorNet (CVPR 2022): decouple snippet features into action and co-occurrence components and
recombine them, ``f' = φA(f) ⊕ φC(f)``.

>>> from refactor import RefactorConfig, RefactorNet, RefactorLoss
>>> model = RefactorNet(RefactorConfig(in_dim=2048))          # the default form, "gated"
>>> paper = RefactorNet(RefactorConfig(in_dim=2048, form="paper"))
>>> out = model(x)                        # x: (N, 2048, T) -> out.features (N, 2048, T)
>>> from refactor import load_refactor     # a trained stage-1 checkpoint, for stage 2

Modules: ``model`` (φA, φC, the losses), ``samples`` (action and coupling samples of one video),
``pairs`` (the pairs of a training set), ``train`` (stage 1 and its checkpoint), ``context`` (the context
score: a supervised co-occurrence component beside f, and its checkpoint), ``apply``
(refactored feature files), ``cam`` (Grad-CAM figures), ``errors``.
"""

from refactor.apply import apply_refactor
from refactor.context import ContextConfig, ContextScorer, load_context, save_context, train_context
from refactor.errors import NoCouplingSamples, RefactorError, check_feature_folder
from refactor.model import (FORMS, RefactorConfig, RefactorLoss, RefactorNet, RefactorOutput, kl_divergence,
                            pair_losses, reconstruction_loss, spread_loss)
from refactor.pairs import PairSet, build_pairs
from refactor.samples import SampleConfig, SampleError, VideoSamples, collect_samples
from refactor.train import TrainConfig, load_refactor, save_checkpoint, train_refactor

__all__ = ["FORMS", "RefactorConfig", "RefactorNet", "RefactorOutput", "RefactorLoss", "pair_losses", "kl_divergence",
           "spread_loss", "reconstruction_loss",
           "SampleConfig", "SampleError", "VideoSamples", "collect_samples", "PairSet", "RefactorError",
           "NoCouplingSamples", "check_feature_folder",
           "TrainConfig", "apply_refactor", "build_pairs", "load_refactor", "save_checkpoint", "train_refactor",
           "ContextConfig", "ContextScorer", "train_context", "save_context", "load_context"]
