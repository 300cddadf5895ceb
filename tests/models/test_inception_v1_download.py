"""InceptionV1's default weights on a fresh machine (issue 42): ``load("inceptionv1")`` finds
them in featviz's cache, else downloads BVLC's caffemodel, checks its SHA-1, converts it and
caches the result. Offline: a local HTTP server on 127.0.0.1 serves a caffemodel that these
tests write from ``../shared/models/googlenet_bvlc_imagenet.pth`` (the caffemodel writer is
below), so the round trip must give that file's tensors bit for bit."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import struct
import threading

import pytest
import torch
from conftest import INCEPTION_V1

import featviz
from featviz.errors import WeightsError
from featviz.models import bvlc_googlenet, caffe, download

BLOCKS = ["3a", "3b", "4a", "4b", "4c", "4d", "4e", "5a", "5b"]
# Caffe's layer names (BVLC's deploy.prototxt) -> InceptionV1's modules, written out here
# rather than taken from featviz, so that a wrong name there shows up as a failed round trip
CAFFE_TO_MODULE = {"conv1/7x7_s2": "conv1", "conv2/3x3_reduce": "conv2", "conv2/3x3": "conv3",
                   **{f"inception_{b}/{caffe_part}": f"inception{b}.{part}" for b in BLOCKS
                      for caffe_part, part in [("1x1", "branch1"), ("3x3_reduce", "branch2.0"),
                                               ("3x3", "branch2.1"), ("5x5_reduce", "branch3.0"),
                                               ("5x5", "branch3.1"), ("pool_proj", "branch4.1")]}}
V1_CONVOLUTION, V1_INNER_PRODUCT, V1_RELU = 4, 14, 18  # V1LayerParameter.LayerType


# -- a caffemodel writer: protobuf's wire format, the fields caffe.proto gives them ----------
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(number: int, payload: bytes | int | float) -> bytes:
    """One field: a varint (int), a fixed32 float, or length-delimited bytes."""
    if isinstance(payload, bool | int):
        return _varint(number << 3) + _varint(int(payload))
    if isinstance(payload, float):
        return _varint(number << 3 | 5) + struct.pack("<f", payload)
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _blob(t: torch.Tensor, legacy: bool) -> bytes:
    """A BlobProto: the four legacy dimensions (num, channels, height, width: files before
    2015) or a BlobShape, then the data as packed little-endian float32."""
    if legacy:
        dims = [1] * (4 - t.dim()) + list(t.shape)
        head = b"".join(_field(n, d) for n, d in zip((1, 2, 3, 4), dims, strict=True))
    else:
        head = _field(7, _field(1, b"".join(_varint(d) for d in t.shape)))
    return head + _field(5, t.detach().numpy().astype("<f4").tobytes())


def _layer(name: str, blobs: list[torch.Tensor], v1: bool) -> bytes:
    """A V1LayerParameter (name 4, type 5, bottom 2, top 3, blobs 6, unpacked blobs_lr 7,
    convolution_param 10) or a LayerParameter (name 1, type 2, bottom 3, top 4, param 6,
    blobs 7), with the settings a real file has around the blobs."""
    if v1:
        kind = V1_RELU if not blobs else V1_INNER_PRODUCT if "classifier" in name \
            else V1_CONVOLUTION
        out = _field(2, b"bottom") + _field(3, name.encode()) + _field(4, name.encode())
        out += _field(5, kind) + b"".join(_field(7, lr) for lr in (1.0, 2.0)[:len(blobs)])
        out += _field(10, _field(1, 64))  # convolution_param { num_output: 64 }
        return out + b"".join(_field(6, _blob(b, legacy=True)) for b in blobs)
    out = _field(1, name.encode()) + _field(2, b"Convolution" if blobs else b"ReLU")
    out += _field(3, b"bottom") + _field(4, name.encode()) + _field(6, _field(3, 1.0))
    return out + b"".join(_field(7, _blob(b, legacy=False)) for b in blobs)


def write_caffemodel(state: dict[str, torch.Tensor], v1: bool = True) -> bytes:
    """BVLC GoogLeNet's caffemodel from featviz's state_dict: the weights in Caffe's layout,
    conv1's input channels back in BGR, plus layers without weights and an auxiliary
    classifier that the conversion must skip."""
    layers = [("data", []), ("conv1/relu_7x7", [])]
    for name, module in CAFFE_TO_MODULE.items():
        weight = state[f"{module}.conv.weight"]
        layers.append((name, [weight.flip(1) if module == "conv1" else weight,
                              state[f"{module}.bn.bias"]]))
    layers.append(("loss1/fc", [torch.ones(16, 32), torch.zeros(16)]))
    layers.append(("loss3/classifier", [state["fc.weight"], state["fc.bias"]]))
    net = _field(1, b"GoogleNet")
    return net + b"".join(_field(2 if v1 else 100, _layer(n, b, v1)) for n, b in layers)


# -- a local server -----------------------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves the caffemodel at /ok/..., without its length and cut short at /short/...,
    cut short after announcing its full length at /cut/..., broken off by a reset at
    /reset/..., and broken off once (cut or reset) then whole at /flaky-cut/... and
    /flaky-reset/... ."""

    timeout = 10  # a client that stops reading cannot hold the server

    def do_GET(self):  # noqa: N802 - http.server's name
        body, hits = self.server.body, self.server.hits
        hits.append(self.path)
        mode = self.path.split("/")[1]
        if mode.startswith("flaky-"):  # broken off the first time, whole after
            mode = mode[len("flaky-"):] if hits.count(self.path) == 1 else "ok"
        self.send_response(200)
        if mode != "short":
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body if mode == "ok" else body[:len(body) // 2])
        if mode == "reset":  # close with SO_LINGER 0: the client gets a reset, not an end
            self.wfile.flush()
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            self.connection.close()

    def log_message(self, *args):
        pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # the reset requests end in errors on purpose


@pytest.fixture(scope="module")
def state():
    if not INCEPTION_V1.is_file():
        pytest.skip(f"real BVLC GoogLeNet weights not found at {INCEPTION_V1} (set "
                    "FEATVIZ_SHARED to the folder holding models/)")
    return torch.load(INCEPTION_V1, weights_only=True)


@pytest.fixture(scope="module")
def caffemodel(state):
    """The caffemodel written from the shared .pth, once for the module."""
    return write_caffemodel(state)


@pytest.fixture(scope="module")
def server(caffemodel):
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.body, srv.hits = caffemodel, []
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=10)


def _url(server, mode: str) -> str:
    return f"http://127.0.0.1:{server.server_address[1]}/{mode}/bvlc_googlenet.caffemodel"


def _closed_port_url() -> str:
    """A URL on 127.0.0.1 where nothing listens: the download fails at once, as offline."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}/bvlc_googlenet.caffemodel"


@pytest.fixture
def cache(tmp_path, monkeypatch, caffemodel, server):
    """An empty cache folder in $FEATVIZ_MODELS, the checksum of the written caffemodel,
    the local server's URL."""
    folder = tmp_path / "cache"
    monkeypatch.setenv("FEATVIZ_MODELS", str(folder))
    monkeypatch.delenv(bvlc_googlenet.URL_ENV, raising=False)
    monkeypatch.setattr(bvlc_googlenet, "CAFFEMODEL_SHA1", hashlib.sha1(caffemodel).hexdigest())
    monkeypatch.setattr(bvlc_googlenet, "CAFFEMODEL_URL", _url(server, "ok"))
    monkeypatch.setattr(download, "TIMEOUT_S", 10)
    server.hits.clear()
    return folder


def _same(net_state: dict, state: dict) -> bool:
    return net_state.keys() == state.keys() and all(
        net_state[k].dtype == v.dtype and torch.equal(net_state[k], v) for k, v in state.items())


# -- the round trip -------------------------------------------------------------------------
def test_the_download_converts_to_the_shared_weights_bit_for_bit(cache, state, server, capsys):
    model = featviz.models.load("inceptionv1")
    assert _same(model.net.state_dict(), state)
    assert sorted(p.name for p in cache.iterdir()) == ["googlenet_bvlc_imagenet.pth"]
    assert _same(torch.load(cache / "googlenet_bvlc_imagenet.pth", weights_only=True), state)
    assert "downloading bvlc_googlenet.caffemodel" in capsys.readouterr().err  # the bar
    again = featviz.models.load("inceptionv1")  # from the cache: no second download
    assert torch.equal(again.net.fc.weight, state["fc.weight"]) and len(server.hits) == 1


def test_caffe_layer_files_since_2015_convert_the_same(state):
    """The reader takes LayerParameter files (field 100, BlobShape) as it takes the V1 ones."""
    blobs = caffe.read_caffemodel(write_caffemodel(state, v1=False))
    template = featviz.models.load("inceptionv1", weights=None).net.state_dict()
    assert _same(bvlc_googlenet.state_dict_from_caffe(blobs, template, 0.001), state)


def test_the_shared_file_is_found_where_featviz_models_points(state, monkeypatch):
    monkeypatch.setenv("FEATVIZ_MODELS", str(INCEPTION_V1.parent))
    monkeypatch.setattr(bvlc_googlenet, "CAFFEMODEL_URL", _closed_port_url())
    assert _same(featviz.models.load("inceptionv1").net.state_dict(), state)


def test_a_file_url_and_the_user_cache_folder_work_offline(tmp_path, monkeypatch, caffemodel,
                                                           state):
    """Without $FEATVIZ_MODELS the cache is platformdirs' user cache folder; a caffemodel
    downloaded elsewhere is taken from $FEATVIZ_INCEPTIONV1_URL as a file:// URL."""
    copy = tmp_path / "bvlc_googlenet.caffemodel"
    copy.write_bytes(caffemodel)
    monkeypatch.delenv("FEATVIZ_MODELS", raising=False)
    monkeypatch.setattr(download.platformdirs, "user_cache_dir",
                        lambda name: str(tmp_path / "user-cache" / name))
    monkeypatch.setenv(bvlc_googlenet.URL_ENV, copy.as_uri())
    monkeypatch.setattr(bvlc_googlenet, "CAFFEMODEL_SHA1", hashlib.sha1(caffemodel).hexdigest())
    assert _same(featviz.models.load("inceptionv1").net.state_dict(), state)
    assert (tmp_path / "user-cache" / "featviz" / "googlenet_bvlc_imagenet.pth").is_file()


# -- failures ---------------------------------------------------------------------------------
def _fails(match: str) -> WeightsError:
    with pytest.raises(WeightsError, match=match) as info:
        featviz.models.load("inceptionv1")
    return info.value


def test_offline_the_error_names_the_url_the_cache_and_weights_path(tmp_path, monkeypatch):
    monkeypatch.delenv("FEATVIZ_MODELS", raising=False)
    monkeypatch.delenv(bvlc_googlenet.URL_ENV, raising=False)
    monkeypatch.setattr(download.platformdirs, "user_cache_dir",
                        lambda name: str(tmp_path / "user-cache" / name))
    url = _closed_port_url()
    monkeypatch.setattr(bvlc_googlenet, "CAFFEMODEL_URL", url)
    err = str(_fails("cannot download"))
    folder = tmp_path / "user-cache" / "featviz"
    assert url in err and str(folder / "googlenet_bvlc_imagenet.pth") in err
    assert "weights=PATH" in err and "FEATVIZ_MODELS is unset" in err
    assert bvlc_googlenet.URL_ENV in err
    assert list(folder.iterdir()) == []  # nothing half-made left


def test_a_truncated_download_fails_its_checksum_and_leaves_nothing(cache, server, monkeypatch):
    """Cut short with no length announced, only the SHA-1 can tell."""
    url = _url(server, "short")
    monkeypatch.setattr(bvlc_googlenet, "CAFFEMODEL_URL", url)
    err = str(_fails("has SHA-1 [0-9a-f]{40}, not the published"))
    assert url in err and bvlc_googlenet.CAFFEMODEL_SHA1 in err
    assert list(cache.iterdir()) == []


def test_a_wrong_checksum_is_refused(cache, monkeypatch):
    monkeypatch.setattr(bvlc_googlenet, "CAFFEMODEL_SHA1", "0" * 40)
    err = str(_fails("not the published 0{40}: it is damaged or another file"))
    assert bvlc_googlenet.CAFFEMODEL_URL in err and "weights=PATH" in err
    assert list(cache.iterdir()) == []


@pytest.mark.parametrize("mode", ["cut", "reset"])
def test_an_interrupted_download_leaves_nothing_and_the_next_call_succeeds(cache, server, state,
                                                                          monkeypatch, mode):
    """The server drops the connection halfway (a clean close before the announced length,
    or a reset); the next call downloads afresh."""
    url = _url(server, f"flaky-{mode}")
    monkeypatch.setattr(bvlc_googlenet, "CAFFEMODEL_URL", url)
    err = str(_fails("broke off after|ended after"))
    assert url in err and "nothing was kept" in err
    assert list(cache.iterdir()) == []
    assert _same(featviz.models.load("inceptionv1").net.state_dict(), state)
    assert len(server.hits) == 2 and sorted(p.name for p in cache.iterdir()) == [
        "googlenet_bvlc_imagenet.pth"]


@pytest.mark.parametrize("how", ["read-only", "under a file"])
def test_a_cache_folder_that_cannot_be_written_says_where_and_how_to_choose(
        cache, server, monkeypatch, how):
    if how == "under a file":
        (cache.parent / "a-file").write_text("not a folder")
        folder = cache.parent / "a-file" / "cache"
        monkeypatch.setenv("FEATVIZ_MODELS", str(folder))
    else:
        folder = cache
        folder.mkdir()
        folder.chmod(0o555)
        if os.access(folder, os.W_OK):
            folder.chmod(0o755)
            pytest.skip("chmod does not stop this user writing (root); the other case tests it")
    try:
        err = str(_fails("cannot write to its cache folder"))
    finally:
        if how == "read-only":
            folder.chmod(0o755)
    assert str(folder) in err and "set FEATVIZ_MODELS to a folder you can write" in err
    assert "weights=PATH" in err and server.hits == []  # told before any download


# -- the reader and the conversion on their own ------------------------------------------------
def test_the_reader_takes_both_spellings_of_repeated_fields_and_doubles():
    packed = _field(7, _field(1, _varint(2) + _varint(3)))
    one_by_one = b"".join(_field(5, float(v)) for v in range(6))  # unpacked fixed32
    doubles = _field(8, struct.pack("<4d", 0.5, 1.5, 2.5, 3.5)) + b"".join(
        _field(n, d) for n, d in zip((1, 2, 3, 4), (1, 1, 2, 2), strict=True))
    net = _field(100, _field(1, b"a") + _field(7, packed + one_by_one)) + \
        _field(2, _field(4, b"b") + _field(6, doubles)) + _field(2, _field(4, b"no blobs"))
    blobs = caffe.read_caffemodel(net)
    assert list(blobs) == ["a", "b"]
    assert torch.equal(blobs["a"][0], torch.arange(6.0).reshape(2, 3))
    assert blobs["b"][0].dtype == torch.float32 and blobs["b"][0].shape == (1, 1, 2, 2)
    assert blobs["b"][0].flatten().tolist() == [0.5, 1.5, 2.5, 3.5]


def test_the_reader_refuses_what_is_not_a_caffemodel():
    net = _field(100, _field(1, b"a") + _field(7, _field(5, struct.pack("<4f", 1, 2, 3, 4))))
    with pytest.raises(WeightsError, match="x.caffemodel is not a readable caffemodel: field"):
        caffe.read_caffemodel(net[:-3], source="x.caffemodel")
    with pytest.raises(WeightsError, match="holds no layer with weights"):
        caffe.read_caffemodel(b"")
    with pytest.raises(WeightsError, match="not a readable caffemodel"):
        caffe.read_caffemodel(b"<html>offline</html>")
    bad_shape = _field(7, _field(1, _varint(3))) + _field(5, struct.pack("<2f", 1, 2))
    with pytest.raises(WeightsError, match=r"a blob of shape \[3\] holds 2 values"):
        caffe.read_caffemodel(_field(100, _field(1, b"a") + _field(7, bad_shape)))


def test_the_conversion_names_a_missing_layer_or_a_blob_of_another_shape(caffemodel):
    blobs = caffe.read_caffemodel(caffemodel)
    template = featviz.models.load("inceptionv1", weights=None).net.state_dict()
    missing = {k: v for k, v in blobs.items() if k != "inception_4a/5x5"}
    with pytest.raises(WeightsError, match="no weight for layer 'inception_4a/5x5' "
                                           r"\(InceptionV1's inception4a.branch3.1.conv"):
        bvlc_googlenet.state_dict_from_caffe(missing, template, 0.001)
    turned = {**blobs, "loss3/classifier": [blobs["loss3/classifier"][0].transpose(2, 3),
                                            blobs["loss3/classifier"][1]]}
    with pytest.raises(WeightsError, match=r"'loss3/classifier' holds a blob of shape "
                                           r"\(1, 1, 1024, 1000\); InceptionV1's fc.weight"):
        bvlc_googlenet.state_dict_from_caffe(turned, template, 0.001)
