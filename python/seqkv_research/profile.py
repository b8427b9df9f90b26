"""The codec profile: what calibration learns once per model and every encoder/decoder shares.

Per (layer, K/V, kv_head) group g, in the coding domain (K before RoPE, V as is):
- a linear predictor W_g [F, d] from the previous layer's RECONSTRUCTED K (pre-RoPE) and V of all
  kv_heads plus a constant 1 (F = 2*H*d + 1); layer 0 has none when the model computes it exactly;
- a KLT basis U_g [d, d] (eigenvectors of the calibration residual's covariance, descending);
- a sensitivity s_g: model-level KL per unit of squared error in that group (nats per squared unit,
  summed over cached tokens and components), measured by noise injection on calibration files;
- optionally per-component weights (1 by default).

Fitting is float64, the profile is stored float32: encoder and decoder must use the same float32
numbers.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .data import Chunk, ModelSide, rope_cos_sin, undo_rope

RIDGE = 1e-3  # ridge penalty, relative to the mean diagonal of X^T X


@dataclass
class CodecOptions:
    pre_rope: bool = True          # code keys before RoPE
    layer0_from_model: bool = True  # layer 0 K/V = the model's own projection of the token ids
    cross_layer: bool = True       # predictor from the previous layer's reconstruction
    klt: bool = True               # per-group KLT; else a fixed random rotation (variance equaliser)
    sensitivity: bool = True       # weight steps by measured KL sensitivity
    deadzone: float = 0.5          # rounding offset rho: q = sign(c) floor(|c|/step + rho); 0.5 = round
    xlayer_inputs: str = "all"     # "all": previous layer's K,V of every kv head; "same": own head only

    def tag(self) -> str:
        parts = [("pre" if self.pre_rope else "post"), ("m0" if self.layer0_from_model else "c0"),
                 ("xl" if self.cross_layer else "mean"), ("klt" if self.klt else "rot"),
                 ("sens" if self.sensitivity else "mse"), f"dz{self.deadzone:g}",
                 f"in-{self.xlayer_inputs}"]
        return "-".join(parts)


@dataclass
class Profile:
    opts: CodecOptions
    layers: int
    heads: int
    dim: int
    pred_w: torch.Tensor          # [L, 2, H, F, d] float32 (layer 0: bias-only row used when coded)
    basis: torch.Tensor           # [L, 2, H, d, d] float32, columns = components
    sens: torch.Tensor            # [L, 2, H] float32, KL per unit squared error (1 when unmeasured)
    comp_w: torch.Tensor          # [L, 2, H, d] float32
    proxy_scale: float = 1.0      # KL / weighted squared error, fitted on calibration encodes
    stats: dict = field(default_factory=dict)

    def size_bytes(self, dtype_bytes: int = 4) -> dict:
        """Bytes of the profile as stored (float32 by default); predictor rows of layer 0 count only
        when layer 0 is coded. Sensitivities and component weights are folded into step sizes."""
        l, h, d = self.layers, self.heads, self.dim
        f = self.pred_w.shape[3]
        coded_layers = l - 1 if self.opts.layer0_from_model else l
        if self.opts.cross_layer:
            f_used = f if self.opts.xlayer_inputs == "all" else 2 * d + 1
            pred = ((l - 1) * f_used + (0 if self.opts.layer0_from_model else 1)) * 2 * h * d
        else:
            pred = coded_layers * 2 * h * d  # mean only
        basis = coded_layers * 2 * h * d * d if self.opts.klt else 0
        steps = coded_layers * 2 * h * d
        return {"predictor": pred * dtype_bytes, "basis": basis * dtype_bytes,
                "steps": steps * dtype_bytes,
                "total": (pred + basis + steps) * dtype_bytes}


def coding_domain(chunk: Chunk, pre_rope: bool) -> torch.Tensor:
    """X [L, 2, H, T, d]: keys (pre-RoPE if asked) and values of a chunk, float32."""
    k = chunk.k
    if pre_rope:
        cos, sin = rope_cos_sin(chunk.tokens.numel(), k.shape[-1], chunk.theta,
                                chunk.first_position)
        k = undo_rope(k, cos, sin)
    return torch.stack([k, chunk.v], dim=1).contiguous()


def layer_features(x_layer: torch.Tensor) -> torch.Tensor:
    """Predictor input from one layer's (reconstructed) K, V [2, H, T, d]: [T, 2*H*d + 1]."""
    two, h, t, d = x_layer.shape
    f = x_layer.permute(2, 0, 1, 3).reshape(t, two * h * d)
    return torch.cat([f, torch.ones(t, 1, dtype=f.dtype)], dim=1)


def predictor_columns(opts: CodecOptions, heads: int, dim: int, head: int) -> torch.Tensor:
    """Indices of layer_features' columns that the predictor of `head` may use (bias last)."""
    f = 2 * heads * dim + 1
    if opts.xlayer_inputs == "all":
        return torch.arange(f)
    own = [kv * heads * dim + head * dim + j for kv in range(2) for j in range(dim)]
    return torch.tensor(own + [f - 1])


def model_layer0(side: ModelSide, tokens: torch.Tensor) -> torch.Tensor:
    k0, v0 = side.layer0_kv(tokens)
    return torch.stack([k0, v0], dim=0)


def _ridge(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    x, y = x.double(), y.double()
    a = x.T @ x
    a += RIDGE * a.diagonal().mean() * torch.eye(a.shape[0], dtype=a.dtype)
    return torch.linalg.solve(a, x.T @ y)


def _random_rotation(d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, r = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return (q * torch.sign(torch.diagonal(r))).float()


def calibrate(chunks: list[Chunk], opts: CodecOptions, side: ModelSide | None = None) -> Profile:
    """Fits predictors (open loop: from the original previous layer) and KLT bases on chunks."""
    xs = [coding_domain(c, opts.pre_rope) for c in chunks]
    l, two, h, t, d = xs[0].shape
    f = two * h * d + 1
    pred_w = torch.zeros(l, 2, h, f, d)
    basis = torch.zeros(l, 2, h, d, d)
    resid_energy = torch.zeros(l, 2, h)
    for layer in range(l):
        if layer == 0 or not opts.cross_layer:
            feats = torch.cat([torch.ones(x.shape[3], 1) for x in xs])
        else:
            feats = torch.cat([layer_features(x[layer - 1]) for x in xs])
        for kv in range(2):
            for head in range(h):
                y = torch.cat([x[layer, kv, head] for x in xs])
                if feats.shape[1] == 1:
                    w = _ridge(feats, y)
                    pred_w[layer, kv, head, -1] = w[0].float()
                    r = y.double() - feats.double() @ w
                else:
                    cols = predictor_columns(opts, h, d, head)
                    w = _ridge(feats[:, cols], y)
                    pred_w[layer, kv, head, cols] = w.float()
                    r = y.double() - feats[:, cols].double() @ w
                resid_energy[layer, kv, head] = float(r.pow(2).mean() / y.double().pow(2).mean())
                if opts.klt:
                    evals, evecs = torch.linalg.eigh(r.T @ r / r.shape[0])
                    basis[layer, kv, head] = evecs.flip(1).float()
                else:
                    basis[layer, kv, head] = _random_rotation(d, 1000 * layer + 10 * kv + head)
    return Profile(opts, l, h, d, pred_w, basis, torch.ones(l, 2, h), torch.ones(l, 2, h, d),
                   stats={"calib_resid_energy": resid_energy.tolist()})
