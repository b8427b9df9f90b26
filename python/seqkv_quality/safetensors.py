"""A small reader and writer for the safetensors format, so the tool needs nothing beyond PyTorch.

Layout: 8-byte little-endian header length N, N bytes of JSON header, then the raw little-endian
tensor bytes. The header maps each tensor name to {"dtype", "shape", "data_offsets": [begin, end)}
with offsets relative to the start of the data area, plus an optional "__metadata__" map of strings
to strings.

The reader checks every offset against the file size and the shape, because the files it reads are
produced by codecs under test: a truncated or inconsistent reconstruction must be a clear error,
never a silently wrong tensor.
"""

from __future__ import annotations

import json
import math
import struct
import sys
from pathlib import Path
from typing import Mapping

import torch

from .errors import QualityError

# safetensors dtype name -> (torch dtype, bytes per element).
_DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "F16": (torch.float16, 2),
    "BF16": (torch.bfloat16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
    "I16": (torch.int16, 2),
    "I8": (torch.int8, 1),
    "U8": (torch.uint8, 1),
    "BOOL": (torch.bool, 1),
}
_NAMES: dict[torch.dtype, str] = {dt: name for name, (dt, _) in _DTYPES.items()}

# A header larger than this is not a real file but garbage or an attack on the reader.
_MAX_HEADER_BYTES = 100 * 1024 * 1024

if sys.byteorder != "little":  # The format is little-endian; torch.frombuffer uses native order.
    raise ImportError("seqkv_quality.safetensors supports little-endian hosts only")


def read_header(path: str | Path) -> tuple[dict, dict[str, str], int]:
    """Reads only the header: (tensor entries, metadata, offset of the data area in the file)."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) != 8:
                raise QualityError(f"{path}: too short for a safetensors file")
            (n,) = struct.unpack("<Q", prefix)
            if n > _MAX_HEADER_BYTES:
                raise QualityError(f"{path}: header length {n} is implausible "
                                   "(not a safetensors file?)")
            raw = f.read(n)
    except OSError as e:
        raise QualityError(f"{path}: cannot read: {e.strerror or e}") from e
    if len(raw) != n:
        raise QualityError(f"{path}: header truncated ({len(raw)} of {n} bytes)")
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise QualityError(f"{path}: header is not valid JSON: {e}") from e
    if not isinstance(header, dict):
        raise QualityError(f"{path}: header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise QualityError(f"{path}: __metadata__ is not a JSON object")
    return header, metadata, 8 + n


def read_safetensors(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Reads every tensor of a file: ({name: tensor}, metadata).

    Tensors keep their stored dtype (callers convert), and own their memory (they are copied out of
    the file buffer, so each one is aligned and independent of the others).
    """
    path = Path(path)
    header, metadata, data_start = read_header(path)
    try:
        blob = path.read_bytes()
    except OSError as e:
        raise QualityError(f"{path}: cannot read: {e.strerror or e}") from e
    data = memoryview(blob)[data_start:]
    tensors: dict[str, torch.Tensor] = {}
    for name, entry in header.items():
        tensors[name] = _tensor_from_entry(path, name, entry, data)
    return tensors, metadata


def _tensor_from_entry(path: Path, name: str, entry: object, data: memoryview) -> torch.Tensor:
    """Validates one header entry against the data area and returns a copy of its tensor."""
    if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= entry.keys():
        raise QualityError(f"{path}: tensor {name!r}: header entry lacks dtype/shape/data_offsets")
    dtype_name = entry["dtype"]
    if dtype_name not in _DTYPES:
        raise QualityError(f"{path}: tensor {name!r}: unsupported dtype {dtype_name!r}")
    dtype, itemsize = _DTYPES[dtype_name]
    shape = entry["shape"]
    if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
        raise QualityError(f"{path}: tensor {name!r}: bad shape {shape!r}")
    offsets = entry["data_offsets"]
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) for o in offsets)):
        raise QualityError(f"{path}: tensor {name!r}: bad data_offsets {offsets!r}")
    begin, end = offsets
    count = math.prod(shape)
    if not 0 <= begin <= end <= len(data):
        raise QualityError(
            f"{path}: tensor {name!r}: data_offsets [{begin}, {end}) outside the data area "
            f"of {len(data)} bytes (truncated file?)")
    if end - begin != count * itemsize:
        raise QualityError(
            f"{path}: tensor {name!r}: {end - begin} bytes for shape {shape} of {dtype_name} "
            f"(expected {count * itemsize})")
    if count == 0:
        return torch.empty(shape, dtype=dtype)
    # bytearray: torch.frombuffer wants a writable buffer; the copy also gives aligned storage.
    chunk = bytearray(data[begin:end])
    return torch.frombuffer(chunk, dtype=dtype, count=count).reshape(shape)


def write_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor],
                      metadata: Mapping[str, str] | None = None) -> None:
    """Writes tensors (in the given order) and string metadata; the header is padded to 8 bytes.

    Used by the tests to make perturbed and mismatched reconstructions, and handy for producing
    reconstructions from Python experiments.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    payloads: list[bytes] = []
    offset = 0
    for name, t in tensors.items():
        if t.dtype not in _NAMES:
            raise QualityError(f"tensor {name!r}: dtype {t.dtype} has no safetensors name")
        t = t.detach().contiguous().cpu()
        # View as bytes through a 1-byte integer type: numpy has no bfloat16, torch views do.
        raw = t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b""
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        payloads.append(raw)
        offset += len(raw)
    head = json.dumps(header, separators=(",", ":")).encode("utf-8")
    head += b" " * (-len(head) % 8)
    with Path(path).open("wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for raw in payloads:
            f.write(raw)
