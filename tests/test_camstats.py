"""Grad-CAM mass inside the actor's box (detect/camstats.py), on hand-made maps and feature files whose
shares are known exactly."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from detect.camstats import box_share, box_to_crop, cam_box_share, snippet_boxes, summarise_shares
from extract.transforms import resize_crop
from refactor.model import RefactorConfig, RefactorNet
from tests.featfiles import write_features

CELL = 224 / 7


def test_box_share_of_hand_made_maps():
    m = np.zeros((4, 7, 7))
    m[:, 0, 0] = 1.0
    m[1, 3, 3] = 1.0                                     # half the mass elsewhere
    m[3] = 1.0                                           # uniform
    boxes = np.array([[0, 0, CELL, CELL],                # exactly cell (0, 0)
                      [0, 0, CELL, CELL],
                      [0, 0, CELL / 2, CELL],            # its left half
                      [10, 20, 10 + 2 * CELL, 20 + CELL]])
    share, chance = box_share(m, boxes)
    np.testing.assert_allclose(share, [1.0, 0.5, 0.5, 2 / 49], atol=1e-12)
    np.testing.assert_allclose(chance, [1 / 49, 1 / 49, 0.5 / 49, 2 / 49], atol=1e-12)
    share, chance = box_share(m[:2], np.array([[5, 5, 5, 30], [0, 0, 10, 10]]))
    assert np.isnan(share[0]) and chance[0] == 0 and share[1] == pytest.approx(0.5 * 100 / CELL ** 2)
    share, _ = box_share(np.zeros((1, 7, 7)), np.array([[0, 0, 10, 10]]))
    assert np.isnan(share[0])                            # a map without mass has no share


def test_box_to_crop_follows_extractions_resize_and_crop():
    # a 160 x 120 frame (detect.world's default) with a filled box: after extraction's resize and crop the
    # box's pixels lie inside the mapped box, and fill it up to the antialiased edge
    for x0, y0, x1, y1 in ((80, 60, 88, 74), (30, 5, 38, 19), (120, 100, 128, 114)):
        frame = np.zeros((1, 120, 160, 3), np.uint8)
        frame[0, y0:y1, x0:x1] = 255
        seen = resize_crop(frame, 256, 224)[0, 0].numpy()
        bx0, by0, bx1, by1 = box_to_crop(np.array([x0, y0, x1, y1]), 160, 120, 256, 224)
        ys, xs = np.nonzero(seen > 0)
        assert xs.min() >= np.floor(bx0) - 1 and xs.max() <= np.ceil(bx1) and ys.min() >= np.floor(by0) - 1
        assert ys.max() <= np.ceil(by1)
        full = np.nonzero(seen >= 250)
        assert full[1].min() <= bx0 + 1.5 and full[1].max() >= bx1 - 2.5
    # 341 x 256 resized, crop offsets (16, 58): x scale 341/160, y scale 256/120
    np.testing.assert_allclose(box_to_crop(np.array([80, 60, 88, 74]), 160, 120),
                               [80 * 341 / 160 - 58, 60 * 256 / 120 - 16, 88 * 341 / 160 - 58, 74 * 256 / 120 - 16])
    np.testing.assert_allclose(box_to_crop(np.array([0, 0, 10, 5]), 160, 120), [0, 0, 0, 0])   # outside the crop


def test_snippet_boxes_union_and_centre():
    boxes = np.zeros((40, 4))
    boxes[:, :] = [10, 10, 20, 20]
    boxes[16:24] = [0, 5, 8, 12]
    boxes[24:32] = [30, 40, 38, 54]
    boxes[17] = [100, 100, 110, 110]                                                    # an odd frame
    union = snippet_boxes(boxes, 16.0, np.array([1, 0]), 16.0, 16, 16, 40, "union")
    np.testing.assert_array_equal(union, [[0, 5, 110, 110], [10, 10, 20, 20]])
    centre = snippet_boxes(boxes, 16.0, np.array([1]), 16.0, 16, 16, 40, "centre")    # frame 24 at t = 1.5 s
    np.testing.assert_array_equal(centre, [[30, 40, 38, 54]])
    # features sampled at half the video's rate: sampled frame k is source frame 2k (frame 17 never seen)
    half = snippet_boxes(boxes, 16.0, np.array([1]), 8.0, 8, 8, 20, "union")
    np.testing.assert_array_equal(half, [[0, 5, 38, 54]])                              # source frames 16..30
    tail = snippet_boxes(boxes, 16.0, np.array([2]), 16.0, 16, 16, 40, "union")        # frames past the end repeat
    np.testing.assert_array_equal(tail, [[10, 10, 20, 20]])
    with pytest.raises(ValueError):
        snippet_boxes(boxes, 16.0, np.array([0]), 16.0, 16, 16, 40, "middle")


def probe_model() -> tuple[RefactorNet, torch.Tensor, torch.Tensor]:
    """φA reads direction v, μ reads u (one linear layer each)."""
    torch.manual_seed(0)
    model = RefactorNet(RefactorConfig(in_dim=1024, hidden_dim=8, num_layers=1)).eval()
    v, u = torch.zeros(1024), torch.zeros(1024)
    v[:16], u[16:32] = 1.0, 1.0
    with torch.no_grad():
        for conv, d in ((model.phi_a[0], v), (model.phi_c[0], u)):
            conv.weight.zero_()
            conv.weight[0, :, 0] = d
            conv.bias.zero_()
    return model, v, u


def test_cam_box_share_on_a_known_map(tmp_path):
    # 10 one-second snippets (16 frames at 16 fps) of a 256 x 256 video: resize is the identity, the crop
    # starts at (16, 16). Snippet 3 (the action, [3.0, 4.0]) has v at grid cell (2, 5) and u everywhere:
    # its action map is exactly that cell, its co-occurrence map uniform. Snippet 7 repeats it (a coupling
    # sample, α = 1); the other snippets have a direction of their own (never coupled).
    model, v, u = probe_model()
    t = 10
    spatial = np.zeros((t, 1024, 7, 7), np.float32)
    for k in range(t):
        spatial[k, 40 + k] = 1.0
    for k in (3, 7):
        spatial[k] = u.numpy()[:, None, None]
        spatial[k, :, 2, 5] += v.numpy()
    path = write_features(tmp_path / "vid.h5", {"rgb": spatial.mean(axis=(2, 3))}, spatial={"rgb": spatial})
    with h5py.File(path, "a") as h5:
        h5.attrs["resize"] = "short side 256 bilinear (antialiased), centre crop 224"
    boxes = np.tile(np.array([[0, 0, 8, 8]]), (160, 1))               # outside the crop (x < 16)
    left = [16 + 5 * CELL, 16 + 2 * CELL, 16 + 5.5 * CELL, 16 + 3 * CELL]           # cell (2, 5), left half
    right = [16 + 5.5 * CELL, 16 + 2 * CELL, 16 + 6 * CELL, 16 + 3 * CELL]          # its right half
    boxes = boxes.astype(np.float64)
    boxes[48:56], boxes[56:64] = left, right                           # snippet 3: frames 48..63, centre 56
    out = cam_box_share(model, ("rgb",), path, boxes, [(3.0, 4.0, "Jump")], (256, 256), 16.0, box="union")
    assert out["video_id"] == "vid"
    rows = {(r["kind"], r["snippet"]): r for r in out["rows"]}
    assert set(rows) == {("action", 3), ("coupling", 7)}
    action = rows[("action", 3)]
    assert action["share_action"] == pytest.approx(1.0) and action["in_crop"]
    assert action["share_cooccurrence"] == pytest.approx(1 / 49) == pytest.approx(action["chance"])
    assert action["label"] == "Jump" and action["time"] == 3.5
    coupling = rows[("coupling", 7)]
    assert coupling["in_crop"] is False and coupling["share_action"] is None and coupling["share_cooccurrence"] is None
    centre = cam_box_share(model, ("rgb",), path, boxes, [(3.0, 4.0, "Jump")], (256, 256), 16.0, box="centre")
    action = next(r for r in centre["rows"] if r["kind"] == "action")
    assert action["share_action"] == pytest.approx(0.5) and action["chance"] == pytest.approx(0.5 / 49)
    summary = summarise_shares([out])
    assert summary["action"]["n"] == 1 and summary["action"]["action_mean"] == pytest.approx(1.0)
    assert summary["coupling"] == {"n": 0, "outside": 1, "action_mean": None, "action_median": None,
                                   "cooccurrence_mean": None, "cooccurrence_median": None, "chance_mean": None}
    assert cam_box_share(model, ("rgb",), path, boxes, [], (256, 256), 16.0)["rows"] == []
