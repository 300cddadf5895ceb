"""Reading the weights of a Caffe ``.caffemodel`` without Caffe and without protobuf.

A caffemodel is one serialized ``NetParameter`` message of Caffe's ``caffe.proto``, in
protobuf's wire format: a run of fields, each a key (field number and wire type, a varint)
then its value (a varint, 4 or 8 bytes, or a length and that many bytes, which for a nested
message are its own fields). Only the few fields that hold learned weights are read:

- ``NetParameter``: ``layer`` (field 100, ``LayerParameter``; Caffe since 2015) or the
  older ``layers`` (field 2, ``V1LayerParameter``, as in BVLC's 2014 model zoo files);
- ``LayerParameter``: ``name`` (1), ``blobs`` (7); ``V1LayerParameter``: ``name`` (4),
  ``blobs`` (6);
- ``BlobProto``: ``data`` (5, float32, packed), ``double_data`` (8), ``shape`` (7, a
  ``BlobShape`` whose ``dim`` is field 1) or the four legacy dimensions ``num``,
  ``channels``, ``height``, ``width`` (1-4).

Everything else (layer settings, learning rates, the net's inputs) is skipped by its wire
type, so any Caffe version's file reads the same way.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from ..errors import WeightsError

# protobuf wire types (groups, types 3 and 4, are not used by caffe.proto)
VARINT, FIXED64, BYTES, FIXED32 = 0, 1, 2, 5

NET_LAYER, NET_LAYERS_V1 = 100, 2
LAYER_NAME, LAYER_BLOBS = 1, 7
V1_NAME, V1_BLOBS = 4, 6
BLOB_LEGACY_DIMS = (1, 2, 3, 4)  # num, channels, height, width
BLOB_DATA, BLOB_SHAPE, BLOB_DOUBLE_DATA = 5, 7, 8
SHAPE_DIM = 1

#: one field of a message: its number, its wire type, its value
Field = tuple[int, int, int | memoryview]


class _Malformed(ValueError):
    """Bytes that do not follow the wire format (a truncated or foreign file)."""


def _varint(buf: memoryview, pos: int) -> tuple[int, int]:
    """The varint at ``pos`` and the position after it."""
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise _Malformed(f"the data ends inside a number at byte {pos}")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise _Malformed(f"a number longer than 10 bytes ends at byte {pos}")


def fields(buf: memoryview) -> Iterator[Field]:
    """The fields of one message: ``(field number, wire type, value)``, the value an int for
    a varint and a view of the bytes otherwise (no copy: a blob's data stays in place).

    Args:
        buf: the message's bytes.

    Raises:
        ValueError: the bytes end inside a field or use a wire type protobuf no longer has.
    """
    pos, end = 0, len(buf)
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == VARINT:
            value, pos = _varint(buf, pos)
        elif wire in (FIXED64, FIXED32, BYTES):
            size = 8 if wire == FIXED64 else 4
            if wire == BYTES:
                size, pos = _varint(buf, pos)
            if pos + size > end:
                raise _Malformed(f"field {number} needs {size} bytes at byte {pos}, "
                                 f"{end - pos} are left")
            value, pos = buf[pos:pos + size], pos + size
        else:
            raise _Malformed(f"wire type {wire} (field {number}) at byte {pos}")
        if number == 0:
            raise _Malformed(f"field number 0 before byte {pos}")
        yield number, wire, value


def _dims(buf: memoryview) -> list[int]:
    """A ``BlobShape``'s dimensions (``dim`` is packed, but a reader takes both spellings)."""
    dims = []
    for number, wire, value in fields(buf):
        if number == SHAPE_DIM and wire == VARINT:
            dims.append(value)
        elif number == SHAPE_DIM and wire == BYTES:
            pos = 0
            while pos < len(value):
                dim, pos = _varint(value, pos)
                dims.append(dim)
    return dims


def _blob(buf: memoryview) -> torch.Tensor:
    """One ``BlobProto`` as a float32 tensor of its shape. Packed and one-by-one values are
    the same little-endian bytes, so both spellings of ``data`` are gathered alike."""
    legacy: dict[int, int] = {}
    shape: list[int] | None = None
    floats: list[memoryview] = []
    doubles: list[memoryview] = []
    for number, wire, value in fields(buf):
        if number in BLOB_LEGACY_DIMS and wire == VARINT:
            legacy[number] = value
        elif number == BLOB_SHAPE and wire == BYTES:
            shape = _dims(value)
        elif number == BLOB_DATA and wire in (BYTES, FIXED32):
            floats.append(value)
        elif number == BLOB_DOUBLE_DATA and wire in (BYTES, FIXED64):
            doubles.append(value)
    raw, dtype = (doubles, "<f8") if doubles and not floats else (floats, "<f4")
    joined = bytearray(b"".join(raw))  # writable, so torch takes it without a copy
    if len(joined) % np.dtype(dtype).itemsize:
        raise _Malformed(f"a blob's data has {len(joined)} bytes, not whole numbers")
    values = np.frombuffer(joined, dtype=dtype).astype(np.float32, copy=False)
    if shape is None:  # files before 2015: num, channels, height, width (unset ones are 0)
        shape = [legacy.get(i, 0) for i in BLOB_LEGACY_DIMS] if legacy else [values.size]
    if int(np.prod(shape)) != values.size:
        raise _Malformed(f"a blob of shape {shape} holds {values.size} values")
    return torch.from_numpy(values).reshape(shape)


def _layer(buf: memoryview, name_field: int, blobs_field: int) -> tuple[str, list[torch.Tensor]]:
    """A layer's name and blobs, in either layer message."""
    name, blobs = "", []
    for number, wire, value in fields(buf):
        if number == name_field and wire == BYTES:
            name = bytes(value).decode("utf-8", errors="replace")
        elif number == blobs_field and wire == BYTES:
            blobs.append(_blob(value))
    return name, blobs


def read_caffemodel(data: bytes | bytearray | memoryview, source: str = "the file"
                    ) -> dict[str, list[torch.Tensor]]:
    """The learned blobs of a caffemodel, by layer name: for a convolution its weight
    ``[out, in, kh, kw]`` then its bias ``[out]``, in Caffe's layout and shapes as stored
    (files before 2015 give every blob four dimensions: an inner product's weight is
    ``[1, 1, out, in]``). Layers without blobs are left out; of two layers of one name, the
    first counts.

    Args:
        data: the file's bytes.
        source: what the bytes are (a path, a URL), for messages.

    Raises:
        WeightsError: the bytes are not a caffemodel (truncated, another format) or hold no
            layer with weights.
    """
    layers: dict[str, list[torch.Tensor]] = {}
    try:
        for number, wire, value in fields(memoryview(data)):
            if wire != BYTES or number not in (NET_LAYER, NET_LAYERS_V1):
                continue
            name, blobs = (_layer(value, LAYER_NAME, LAYER_BLOBS) if number == NET_LAYER
                           else _layer(value, V1_NAME, V1_BLOBS))
            if blobs and name not in layers:
                layers[name] = blobs
    except _Malformed as err:
        raise WeightsError(f"{source} is not a readable caffemodel: {err}") from None
    if not layers:
        raise WeightsError(f"{source} holds no layer with weights: is it a caffemodel?")
    return layers
