"""KV-cache dumps: loading one file and refusing inputs that cannot be compared.

A dump (see ../shared/kvdata/README.md) holds `tokens` I32[T] and `k`, `v` [layers, kv_heads, T,
head_dim] (K after RoPE) in BF16, F16 or F32, optionally `logprob` F32[T] and string metadata. A
reconstruction is a dump written back by a codec; it needs `tokens`, `k`, `v` only.

Everything a comparison relies on is checked here, before any model arithmetic, so that a wrong
input is reported by name ("recon.safetensors: tokens differ from orig.safetensors at position 17")
instead of surfacing as a shape error deep in the forward pass or, worse, as a plausible-looking KL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import QualityError
from .model import LlamaConfig
from .safetensors import read_safetensors

_KV_DTYPES = {torch.bfloat16: "BF16", torch.float16: "F16", torch.float32: "F32"}
_TOKEN_DTYPES = (torch.int32, torch.int64, torch.int16, torch.uint8)


@dataclass
class KvDump:
    """One loaded dump. k and v are float32 holding the stored values exactly (all three stored
    dtypes convert losslessly); kv_dtype records what was stored."""

    path: Path
    tokens: torch.Tensor            # [T] int64
    k: torch.Tensor                 # [layers, kv_heads, T, head_dim] float32, after RoPE
    v: torch.Tensor                 # same shape
    kv_dtype: str                   # "BF16", "F16" or "F32"
    logprob: torch.Tensor | None    # [T] float32 or None
    metadata: dict[str, str] = field(default_factory=dict)
    first_position: int = 0         # RoPE position of token 0 (metadata "rope"), 0 when absent

    @property
    def num_tokens(self) -> int:
        return int(self.tokens.numel())


def load_dump(path: str | Path, cfg: LlamaConfig | None = None) -> KvDump:
    """Loads and validates a dump; with cfg, also checks it fits that model's shape and RoPE."""
    path = Path(path)
    tensors, metadata = read_safetensors(path)
    for name in ("tokens", "k", "v"):
        if name not in tensors:
            raise QualityError(f"{path}: no tensor {name!r} (has {sorted(tensors)})")
    tokens, k, v = tensors["tokens"], tensors["k"], tensors["v"]
    if tokens.dim() != 1 or tokens.dtype not in _TOKEN_DTYPES:
        raise QualityError(f"{path}: tokens must be a 1-D integer tensor, got {tokens.dtype} "
                           f"{tuple(tokens.shape)}")
    t = tokens.numel()
    for name, x in (("k", k), ("v", v)):
        if x.dtype not in _KV_DTYPES:
            raise QualityError(f"{path}: {name} has dtype {x.dtype}; BF16, F16 or F32 expected")
        if x.dim() != 4 or x.shape[2] != t:
            raise QualityError(f"{path}: {name} has shape {tuple(x.shape)}; expected "
                               f"[layers, kv_heads, {t}, head_dim] for {t} tokens")
    if k.shape != v.shape or k.dtype != v.dtype:
        raise QualityError(f"{path}: k {k.dtype} {tuple(k.shape)} and v {v.dtype} "
                           f"{tuple(v.shape)} differ")
    kf, vf = k.to(torch.float32), v.to(torch.float32)
    for name, x in (("k", kf), ("v", vf)):
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).sum())
            raise QualityError(f"{path}: {name} holds {bad} non-finite values (NaN or Inf)")
    logprob = tensors.get("logprob")
    if logprob is not None:
        if logprob.shape != (t,):
            raise QualityError(f"{path}: logprob has shape {tuple(logprob.shape)}, expected ({t},)")
        logprob = logprob.to(torch.float32)
    dump = KvDump(path, tokens.to(torch.int64), kf, vf, _KV_DTYPES[k.dtype], logprob,
                  dict(metadata), _first_position(path, metadata, cfg))
    if cfg is not None:
        check_fits_model(dump, cfg)
    return dump


def _first_position(path: Path, metadata: dict[str, str], cfg: LlamaConfig | None) -> int:
    """Reads the metadata's "rope" entry and checks it against the model's RoPE, if both exist."""
    if "rope" not in metadata:
        return 0
    try:
        rope = json.loads(metadata["rope"])
        first = int(rope.get("first_position", 0))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as e:
        raise QualityError(f"{path}: metadata 'rope' is not a JSON object: {e}") from e
    if cfg is not None:
        if "theta" in rope and float(rope["theta"]) != cfg.rope_theta:
            raise QualityError(f"{path}: RoPE theta {rope['theta']} but the model has "
                               f"{cfg.rope_theta}: the cache belongs to another model")
        if "head_dim" in rope and int(rope["head_dim"]) != cfg.head_dim:
            raise QualityError(f"{path}: RoPE head_dim {rope['head_dim']} but the model has "
                               f"{cfg.head_dim}")
        if rope.get("style", "rotate_half") != "rotate_half":
            raise QualityError(f"{path}: RoPE style {rope['style']!r}; Llama uses rotate_half")
    return first


def check_fits_model(dump: KvDump, cfg: LlamaConfig) -> None:
    """The cache must have the model's layer count, KV heads, head_dim, and in-vocabulary tokens."""
    want = (cfg.num_layers, cfg.num_kv_heads, cfg.head_dim)
    got = (dump.k.shape[0], dump.k.shape[1], dump.k.shape[3])
    if got != want:
        raise QualityError(f"{dump.path}: cache is [layers, kv_heads, head_dim] = {list(got)}, the "
                           f"model needs {list(want)}")
    if dump.num_tokens and (int(dump.tokens.min()) < 0 or int(dump.tokens.max()) >= cfg.vocab_size):
        raise QualityError(f"{dump.path}: token ids outside the model's vocabulary "
                           f"[0, {cfg.vocab_size})")


def check_pair(orig: KvDump, recon: KvDump, prefix: int) -> None:
    """A reconstruction must be of the same tokens and shape as its original, and long enough."""
    if orig.tokens.shape != recon.tokens.shape:
        raise QualityError(f"{recon.path}: {recon.num_tokens} tokens but {orig.path} has "
                           f"{orig.num_tokens}")
    diff = (orig.tokens != recon.tokens).nonzero()
    if diff.numel():
        i = int(diff[0])
        raise QualityError(f"{recon.path}: tokens differ from {orig.path} at {diff.numel()} "
                           f"positions, first at {i} ({int(recon.tokens[i])} vs "
                           f"{int(orig.tokens[i])}): not a reconstruction of that dump")
    if orig.k.shape != recon.k.shape:
        raise QualityError(f"{recon.path}: k/v shape {tuple(recon.k.shape)} but {orig.path} has "
                           f"{tuple(orig.k.shape)}")
    if orig.first_position != recon.first_position:
        raise QualityError(f"{recon.path}: RoPE first_position {recon.first_position} but "
                           f"{orig.path} has {orig.first_position}")
    check_prefix(orig, prefix)


def check_prefix(dump: KvDump, prefix: int) -> None:
    """At least one cached position and at least one position to run after it."""
    if not 1 <= prefix < dump.num_tokens:
        raise QualityError(f"{dump.path}: prefix {prefix} must be in [1, {dump.num_tokens - 1}] "
                           f"for {dump.num_tokens} tokens")
