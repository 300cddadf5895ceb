"""InceptionV1's weights from their original release: BVLC's ``bvlc_googlenet.caffemodel`` of
the Caffe model zoo, downloaded, checked against the SHA-1 the zoo publishes, converted to the
state_dict :class:`~featviz.models.inception_v1.InceptionV1` loads, and cached.

The conversion is the one that made ``googlenet_bvlc_imagenet.pth`` (the file featviz's tests
use): every Caffe weight copied unchanged into its module, except the first convolution's input
channels, reversed from Caffe's BGR to RGB (the model takes RGB; Caffe's 0-255 scale and mean
are the model's preprocessing, not the weights'). Caffe's convolution biases go into each
unit's ``bn`` (weight 1, mean 0, variance ``1 - eps``: the identity plus the bias in eval mode);
the auxiliary classifiers (``loss1/*``, ``loss2/*``) are left out, as the model has none.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import torch

from ..core.files import write_atomic
from ..errors import FeatvizError, WeightsError
from . import caffe, download

# The Caffe model zoo's entry for BVLC GoogLeNet: caffemodel_url and sha1 in the front matter
# of https://github.com/BVLC/caffe/blob/master/models/bvlc_googlenet/readme.md (the zoo's
# readme format; scripts/download_model_binary.py checks the same SHA-1)
#: where BVLC publishes the weights (tests point it at a local server)
CAFFEMODEL_URL = "http://dl.caffe.berkeleyvision.org/bvlc_googlenet.caffemodel"
#: the SHA-1 the model zoo publishes for that file
CAFFEMODEL_SHA1 = "405fc5acd08a3bb12de8ee5e23a96bec22f08204"
CAFFEMODEL_FILE = "bvlc_googlenet.caffemodel"
#: a variable that overrides the URL: a mirror, or ``file:///...`` for a copy on disk
URL_ENV = "FEATVIZ_INCEPTIONV1_URL"

# InceptionV1's weighted modules -> the Caffe layers (deploy.prototxt's names) that hold them
_STEM = {"conv1": "conv1/7x7_s2", "conv2": "conv2/3x3_reduce", "conv3": "conv2/3x3",
         "fc": "loss3/classifier"}
_BRANCHES = {"branch1": "1x1", "branch2.0": "3x3_reduce", "branch2.1": "3x3",
             "branch3.0": "5x5_reduce", "branch3.1": "5x5", "branch4.1": "pool_proj"}
# the layer that sees the image: its input channels are BGR in Caffe, RGB here
_IMAGE_LAYER = "conv1/7x7_s2"


def caffemodel_url() -> str:
    """Where the caffemodel is downloaded from: ``$FEATVIZ_INCEPTIONV1_URL``, else
    :data:`CAFFEMODEL_URL`."""
    return os.environ.get(URL_ENV) or CAFFEMODEL_URL


def caffe_layer(module: str) -> str:
    """The Caffe layer that holds the weights of an InceptionV1 module.

    Args:
        module: a module path with weights (``"conv1"``, ``"inception4a.branch3.1"``,
            ``"fc"``).

    Raises:
        KeyError: the module has no Caffe counterpart.
    """
    if module in _STEM:
        return _STEM[module]
    block, _, branch = module.partition(".")
    if block.startswith("inception") and branch in _BRANCHES:
        return f"inception_{block[len('inception'):]}/{_BRANCHES[branch]}"
    raise KeyError(module)


def state_dict_from_caffe(blobs: Mapping[str, list[torch.Tensor]],
                          template: Mapping[str, torch.Tensor], eps: float
                          ) -> dict[str, torch.Tensor]:
    """InceptionV1's state_dict from the blobs of BVLC's caffemodel (see the module
    docstring).

    Args:
        blobs: the caffemodel's blobs by layer, as :func:`featviz.models.caffe.read_caffemodel`
            gives them.
        template: the state_dict of an InceptionV1 (its keys, shapes and dtypes).
        eps: the ``eps`` of each unit's ``bn`` (its variance is ``1 - eps``).

    Raises:
        WeightsError: a layer or blob is missing, or a blob has another shape than its module.
    """
    return {key: _entry(blobs, key, like, eps) for key, like in template.items()}


def _entry(blobs: Mapping[str, list[torch.Tensor]], key: str, like: torch.Tensor,
           eps: float) -> torch.Tensor:
    """One entry of the state_dict: a Caffe blob, or a constant of the identity batch norm."""
    module, _, entry = key.rpartition(".")
    owner, _, part = module.rpartition(".")
    try:
        layer = caffe_layer(module if module == "fc" else owner)
    except KeyError:
        raise WeightsError(f"no Caffe layer holds InceptionV1's {key}") from None
    if module == "fc" and entry in ("weight", "bias"):
        return _caffe_blob(blobs, key, layer, int(entry == "bias"), like)
    if part == "conv" and entry == "weight":
        return _caffe_blob(blobs, key, layer, 0, like)
    if part == "bn" and entry == "bias":
        return _caffe_blob(blobs, key, layer, 1, like)
    constants = {"weight": 1.0, "running_mean": 0.0, "running_var": 1 - eps,
                 "num_batches_tracked": 0}
    if part == "bn" and entry in constants:
        return torch.full_like(like, constants[entry])
    raise WeightsError(f"no Caffe weight is known for InceptionV1's {key}")


def _caffe_blob(blobs: Mapping[str, list[torch.Tensor]], key: str, layer: str, index: int,
                like: torch.Tensor) -> torch.Tensor:
    """Blob ``index`` of ``layer`` in the shape of ``like``; its shape must be that one but
    for leading 1s (files before 2015 store an inner product's weight as [1, 1, out, in])."""
    found = blobs.get(layer, [])
    if index >= len(found):
        raise WeightsError(f"the caffemodel has no {'bias' if index else 'weight'} for layer "
                           f"{layer!r} (InceptionV1's {key})")
    blob = found[index]
    if _squeezed(blob.shape) != _squeezed(like.shape):
        raise WeightsError(f"the caffemodel's layer {layer!r} holds a blob of shape "
                           f"{tuple(blob.shape)}; InceptionV1's {key} is {tuple(like.shape)}")
    value = blob.reshape(like.shape).to(like.dtype)
    return value.flip(1) if layer == _IMAGE_LAYER and index == 0 else value


def _squeezed(shape: torch.Size) -> tuple[int, ...]:
    """``shape`` without its leading 1s."""
    dims = list(shape)
    while dims and dims[0] == 1:
        dims.pop(0)
    return tuple(dims)


def fetch(target: Path, template: Mapping[str, torch.Tensor], eps: float) -> Path:
    """Make ``target``, InceptionV1's weights as a state_dict file: download BVLC's
    caffemodel into ``target``'s folder, check its SHA-1, convert it and write the result
    atomically; the caffemodel is not kept.

    Args:
        target: the file to make (``googlenet_bvlc_imagenet.pth`` in featviz's cache).
        template: the state_dict of an InceptionV1 (its keys, shapes and dtypes).
        eps: the ``eps`` of each unit's ``bn``.

    Raises:
        WeightsError: the download failed, the file is not the published one, or it does not
            convert; each message says what to do.
    """
    url = caffemodel_url()
    try:
        with download.downloaded(url, target.parent, CAFFEMODEL_SHA1, CAFFEMODEL_FILE) as got:
            blobs = caffe.read_caffemodel(got.read_bytes(), source=f"the download from {url}")
    except download.DownloadError as err:
        raise WeightsError(f"{err}. A mirror, or a copy of {CAFFEMODEL_FILE} downloaded "
                           f"elsewhere (file:///PATH/{CAFFEMODEL_FILE}), can be given in "
                           f"${URL_ENV}") from None
    state = state_dict_from_caffe(blobs, template, eps)
    try:
        write_atomic(target, lambda tmp: torch.save(state, tmp))
    except FeatvizError as err:  # the folder took the download but not this file (disk full)
        raise WeightsError(str(err)) from None
    return target
