"""Dumps, RoPE undo/redo, and the side information the decoder can compute from the model.

Conventions: K and V are [layers, kv_heads, T, head_dim] float32; K as stored is after RoPE in the
rotate-half convention (pairs i, i + d/2). The codec works on pre-RoPE keys: RoPE is a position-
dependent rotation, so undoing it is exact up to float32 rounding and removes the position structure
that makes post-RoPE keys look token-correlated.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from seqkv_quality.safetensors import read_safetensors

SHARED = Path(__file__).resolve().parents[3] / "shared"
MODEL_DIR = SHARED / "models" / "tinyllama-12m"
DEV_DIR = SHARED / "kvdata" / "dev"


def dev_paths() -> list[Path]:
    return [DEV_DIR / f"doc{i:02d}.safetensors" for i in range(8)]


@dataclass
class Chunk:
    """One dump: tokens [T] int64, k (post-RoPE) and v [L, H, T, d] float32, RoPE parameters."""

    path: Path
    tokens: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor
    theta: float
    first_position: int


def load_chunk(path: str | Path) -> Chunk:
    tensors, meta = read_safetensors(path)
    rope = json.loads(meta.get("rope", "{}"))
    return Chunk(Path(path), tensors["tokens"].to(torch.int64), tensors["k"].float(),
                 tensors["v"].float(), float(rope.get("theta", 10000.0)),
                 int(rope.get("first_position", 0)))


def rope_cos_sin(t: int, d: int, theta: float, first_position: int) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [T, d] of the rotate-half RoPE, computed as the model computes them (float32)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    pos = torch.arange(first_position, first_position + t).to(torch.float32)
    freqs = pos[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    return x * cos + _rotate_half(x) * sin


def undo_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Inverse rotation: R(-p) = cos - rotate_half * sin."""
    return x * cos - _rotate_half(x) * sin


class ModelSide:
    """What a decoder that holds the model's weights can compute from the token ids alone.

    Layer 0's K (pre-RoPE) and V are k_proj/v_proj of RMSNorm(embedding): a pure function of the token
    id. Cost per token: one RMSNorm of `hidden` values and a [hidden x 2*kv_heads*head_dim] product
    (384 x 256 = 98K multiply-adds here; 4096 x 2048 = 8.4M for an 8B-class model, ~0.05% of its
    forward pass over all layers).
    """

    def __init__(self, model_dir: str | Path = MODEL_DIR):
        model_dir = Path(model_dir)
        cfg = json.loads((model_dir / "config.json").read_text())
        index = json.loads((model_dir / "model.safetensors.index.json").read_text())["weight_map"]
        w: dict[str, torch.Tensor] = {}
        for shard in sorted({index[n] for n in index}):
            tensors, _ = read_safetensors(model_dir / shard)
            for name, t in tensors.items():
                w[name.removeprefix("model.")] = t.float()
        self.w = w
        self.eps = float(cfg.get("rms_norm_eps", 1e-6))
        self.kv_heads = int(cfg["num_key_value_heads"])
        self.heads = int(cfg["num_attention_heads"])
        self.head_dim = int(cfg.get("head_dim") or cfg["hidden_size"] // self.heads)
        self.layers = int(cfg["num_hidden_layers"])

    def layer0_kv(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer 0's pre-RoPE K and V [kv_heads, T, d], float32, as the model computes them."""
        x = self.w["embed_tokens.weight"][tokens]
        var = x.pow(2).mean(-1, keepdim=True)
        hn = self.w["layers.0.input_layernorm.weight"] * (x * torch.rsqrt(var + self.eps))
        t, h, d = tokens.numel(), self.kv_heads, self.head_dim
        k = (hn @ self.w["layers.0.self_attn.k_proj.weight"].T).view(t, h, d).transpose(0, 1)
        v = (hn @ self.w["layers.0.self_attn.v_proj.weight"].T).view(t, h, d).transpose(0, 1)
        return k.contiguous(), v.contiguous()
