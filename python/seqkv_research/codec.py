"""Closed-loop encoder and decoder of the sequential lossy codec, with an entropy estimate.

Order of operations (the decoder repeats exactly the encoder's reconstruction path, so the two agree
bit for bit; see docs/seq_codec_design.md for the C++ version):

  layer 0: if opts.layer0_from_model, X^[0] = the model's k/v projection of the tokens (no symbols);
  for layer = (1 or 0) .. L-1:
    F    = [X^[layer-1] (all kv heads, K pre-RoPE and V), 1]        (reconstruction, not original)
    for kv in (K, V), head in 0..H-1:
      pred = F @ W[layer, kv, head]
      c    = (x - pred) @ U[layer, kv, head]        encoder only
      q    = sign(c) * floor(|c| / step + rho)       encoder only; step per component
      x^   = pred + (q * step) @ U^T                 encoder and decoder
  keys: RoPE re-applied to x^ (positions first_position..), values as they are.

Rate: each component's symbols over the chunk's tokens are modelled as zero with probability p0
and |q|-1 geometric with ratio a, plus a sign bit; p0 and a are sent per component (8 bits each)
and a 1-bit all-zero flag. Bits = the ideal code length under that model (what a static-per-chunk
rANS coder achieves to within ~0.1%), side information included. It is an ESTIMATE, not a coded size.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .data import Chunk, ModelSide, apply_rope, rope_cos_sin
from .profile import Profile, coding_domain, layer_features, model_layer0

FLAG_BITS = 1
PARAM_BITS = 16     # p0 and a, 8 bits each, per coded component and chunk
HEADER_BITS = 32 + 8 * 64  # delta0 as float32, per-group step multipliers (8 bits, up to 64 groups)


@dataclass
class Encoded:
    """What the decoder receives (besides tokens, positions, profile and model)."""

    delta0: float
    group_mult: torch.Tensor       # [L, 2, H] float32 step multipliers (rate set per layer and K/V)
    q: torch.Tensor                # [L, 2, H, T, d] int32 symbols (layer 0 unused with model side info)
    bits: float                    # entropy estimate incl. side info
    bits_empirical: float          # sum of per-component empirical entropies, no side info (a bound)
    bits_per_layer: list[float]    # [L] estimate incl. side info
    elements: int

    @property
    def bits_per_element(self) -> float:
        return self.bits / self.elements


def step_sizes(profile: Profile, delta0: float, group_mult: torch.Tensor) -> torch.Tensor:
    """[L, 2, H, d] float32 quantizer steps: equal slope of the weighted distortion everywhere, i.e.
    step^2 * sens * w constant (reverse water-filling falls out: components whose spread is below
    the step quantize to zero and cost only their flag)."""
    if profile.opts.sensitivity:
        s = profile.sens / torch.exp(torch.log(profile.sens).mean())
        weight = s[..., None] * profile.comp_w
    else:
        weight = torch.ones_like(profile.comp_w)
    steps = delta0 * group_mult[..., None] / torch.sqrt(weight)
    return steps.to(torch.float32)


def _layer_prediction(profile: Profile, layer: int, prev: torch.Tensor | None, t: int) -> torch.Tensor:
    """pred [2, H, T, d] for one layer from the previous layer's reconstruction."""
    w = profile.pred_w[layer]
    if prev is None or not profile.opts.cross_layer:
        return w[:, :, -1, None, :].expand(2, profile.heads, t, profile.dim).clone()
    feats = layer_features(prev)
    out = torch.empty(2, profile.heads, t, profile.dim)
    for kv in range(2):
        for head in range(profile.heads):
            out[kv, head] = feats @ w[kv, head]
    return out


def _dequantize(profile: Profile, layer: int, pred: torch.Tensor, q: torch.Tensor,
                steps: torch.Tensor) -> torch.Tensor:
    """x^ = pred + (q * step) @ U^T, per group, in a fixed order (shared by encoder and decoder)."""
    out = torch.empty_like(pred)
    for kv in range(2):
        for head in range(profile.heads):
            c_hat = q[kv, head].to(torch.float32) * steps[layer, kv, head]
            out[kv, head] = pred[kv, head] + c_hat @ profile.basis[layer, kv, head].T
    return out


def _first_coded_layer(profile: Profile) -> int:
    return 1 if profile.opts.layer0_from_model else 0


def _layer0(profile: Profile, side: ModelSide, tokens: torch.Tensor, cos, sin) -> torch.Tensor:
    x0 = model_layer0(side, tokens)
    if not profile.opts.pre_rope:
        x0 = x0.clone()
        x0[0] = apply_rope(x0[0], cos, sin)
    return x0


def _component_bits(q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q [..., T, d] -> (estimated bits incl. side info, empirical entropy bits), each [..., d]."""
    qa = q.abs().to(torch.float64)
    t = q.shape[-2]
    nz = (qa > 0).to(torch.float64)
    n_nz = nz.sum(-2)
    any_nz = n_nz > 0
    p0_idx = torch.clamp(torch.round((t - n_nz) / t * 256), 1, 255)
    p0 = p0_idx / 256
    mean_k1 = torch.where(any_nz, ((qa - 1).clamp_min(0) * nz).sum(-2) / n_nz.clamp_min(1), 0.0)
    a = mean_k1 / (1 + mean_k1)
    a_idx = torch.clamp(torch.round(a * 256), 0, 255)
    a_idx = torch.where((qa.amax(-2) > 1), a_idx.clamp_min(1), a_idx)
    aq = a_idx / 256
    extra = ((qa - 1).clamp_min(0) * nz).sum(-2)
    log_a = torch.where(aq > 0, torch.log2(aq.clamp_min(1e-300)), 0.0)
    bits = (-(t - n_nz) * torch.log2(p0) - n_nz * torch.log2(1 - p0) + n_nz
            - n_nz * torch.log2(1 - aq) - extra * log_a)
    bits = torch.where(any_nz, bits + PARAM_BITS + FLAG_BITS, torch.full_like(bits, FLAG_BITS))
    # Empirical entropy of the symbols per component (a lower bound for a static per-chunk table).
    flat = q.movedim(-2, -1).reshape(-1, t)
    ent = torch.zeros(flat.shape[0], dtype=torch.float64)
    for i in torch.nonzero(any_nz.reshape(-1)).flatten().tolist():
        _, counts = torch.unique(flat[i], return_counts=True)
        p = counts.to(torch.float64) / t
        ent[i] = float(-(p * torch.log2(p)).sum() * t)
    emp = ent.reshape(bits.shape)
    return bits, emp


def encode(chunk: Chunk, profile: Profile, delta0: float, side: ModelSide | None = None,
           group_mult: torch.Tensor | None = None) -> tuple[Encoded, torch.Tensor]:
    """Returns the symbols with the rate estimate, and the reconstruction X^ [L, 2, H, T, d] in the
    coding domain (exactly what decode() produces)."""
    x = coding_domain(chunk, profile.opts.pre_rope)
    l, _, h, t, d = x.shape
    if group_mult is None:
        group_mult = torch.ones(l, 2, h)
    steps = step_sizes(profile, delta0, group_mult)
    rho = profile.opts.deadzone
    q_all = torch.zeros(l, 2, h, t, d, dtype=torch.int32)
    recon = torch.empty_like(x)
    cos, sin = rope_cos_sin(t, d, chunk.theta, chunk.first_position)
    first = _first_coded_layer(profile)
    if first == 1:
        recon[0] = _layer0(profile, side, chunk.tokens, cos, sin)
    for layer in range(first, l):
        prev = recon[layer - 1] if layer > 0 else None
        pred = _layer_prediction(profile, layer, prev, t)
        for kv in range(2):
            for head in range(h):
                c = (x[layer, kv, head] - pred[kv, head]) @ profile.basis[layer, kv, head]
                s = steps[layer, kv, head]
                q_all[layer, kv, head] = (torch.sign(c) * torch.floor(c.abs() / s + rho)).to(torch.int32)
        recon[layer] = _dequantize(profile, layer, pred, q_all[layer], steps)
    bits, emp = _component_bits(q_all[first:])
    per_layer = [0.0] * first + bits.sum(dim=(1, 2, 3)).tolist()
    total = float(bits.sum()) + HEADER_BITS
    enc = Encoded(delta0, group_mult, q_all, total, float(emp.sum()) + HEADER_BITS, per_layer,
                  x.numel())
    return enc, recon


def decode(enc: Encoded, tokens: torch.Tensor, theta: float, first_position: int,
           profile: Profile, side: ModelSide | None = None) -> torch.Tensor:
    """Reconstruction X^ [L, 2, H, T, d] in the coding domain from symbols alone."""
    l, _, h, t, d = enc.q.shape
    steps = step_sizes(profile, enc.delta0, enc.group_mult)
    recon = torch.empty(l, 2, h, t, d)
    cos, sin = rope_cos_sin(t, d, theta, first_position)
    first = _first_coded_layer(profile)
    if first == 1:
        recon[0] = _layer0(profile, side, tokens, cos, sin)
    for layer in range(first, l):
        prev = recon[layer - 1] if layer > 0 else None
        pred = _layer_prediction(profile, layer, prev, t)
        recon[layer] = _dequantize(profile, layer, pred, enc.q[layer], steps)
    return recon


def to_cache(recon: torch.Tensor, chunk: Chunk, pre_rope: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Coding domain -> (K after RoPE, V) [L, H, T, d], rounded to bf16 as an engine stores them."""
    k, v = recon[:, 0], recon[:, 1]
    if pre_rope:
        cos, sin = rope_cos_sin(k.shape[2], k.shape[3], chunk.theta, chunk.first_position)
        k = apply_rope(k, cos, sin)
    return k.bfloat16().float(), v.bfloat16().float()


def weighted_error(recon: torch.Tensor, chunk: Chunk, profile: Profile, prefix: int) -> tuple[float, torch.Tensor]:
    """KL proxy: sum over groups and KLT components of sens_g * w_gi * squared error, first
    `prefix` tokens (the cached ones), coding domain (RoPE is a rotation: pre- and post-RoPE key
    errors have the same norm). Returns the proxy and the per-group squared errors [L, 2, H]."""
    x = coding_domain(chunk, profile.opts.pre_rope)
    err = (recon[:, :, :, :prefix] - x[:, :, :, :prefix]).double()
    e_klt = torch.einsum("lkhtd,lkhde->lkhte", err, profile.basis.double()).pow(2).sum(3)
    proxy = (e_klt * profile.comp_w.double() * profile.sens.double()[..., None]).sum()
    return float(proxy * profile.proxy_scale), err.pow(2).sum(dim=(3, 4))


def encode_at_rate(chunk: Chunk, profile: Profile, target_bpe: float, side: ModelSide | None,
                   tol: float = 0.005, iters: int = 30) -> tuple[Encoded, torch.Tensor]:
    """Rate control: bisection on log(delta0) until bits/element is within tol (relative) of target."""
    lo, hi = math.log(1e-4), math.log(1e2)
    best = None
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        enc, recon = encode(chunk, profile, math.exp(mid), side)
        bpe = enc.bits_per_element
        if best is None or abs(bpe - target_bpe) < abs(best[0].bits_per_element - target_bpe):
            best = (enc, recon)
        if abs(bpe - target_bpe) <= tol * target_bpe:
            break
        if bpe > target_bpe:
            lo = mid
        else:
            hi = mid
    return best


def encode_at_distortion(chunk: Chunk, profile: Profile, target_proxy: float, side: ModelSide | None,
                         prefix: int = 768, tol: float = 0.02, iters: int = 30
                         ) -> tuple[Encoded, torch.Tensor, float]:
    """Guardrail mode: largest delta0 whose KL proxy is within tol of target_proxy (from below)."""
    lo, hi = math.log(1e-4), math.log(1e2)
    best = None
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        enc, recon = encode(chunk, profile, math.exp(mid), side)
        proxy, _ = weighted_error(recon, chunk, profile, prefix)
        if proxy <= target_proxy:
            best = (enc, recon, proxy)
            lo = mid
            if proxy >= (1 - tol) * target_proxy:
                break
        else:
            hi = mid
    return best


def refit_closed_loop(profile: Profile, chunks: list[Chunk], delta0: float,
                      side: ModelSide | None) -> Profile:
    """Refits every predictor (and its KLT basis) on the features the decoder will really have:
    the calibration files' reconstructions at delta0, layer by layer (layer l is refitted on the
    reconstruction of layer l-1 made with the already refitted layers below). Tunes the profile
    to one operating point: at coarse steps the previous layer is noisier and the optimal
    predictor shrinks towards the mean."""
    import copy

    from .profile import _ridge, predictor_columns
    prof = copy.deepcopy(profile)
    if not prof.opts.cross_layer:
        return prof
    xs = [coding_domain(c, prof.opts.pre_rope) for c in chunks]
    first = _first_coded_layer(prof)
    for layer in range(max(first, 1), prof.layers):
        feats = []
        for c in chunks:
            _, recon = encode(c, prof, delta0, side)  # layers below `layer` already refitted
            feats.append(layer_features(recon[layer - 1]))
        feats = torch.cat(feats)
        for kv in range(2):
            for head in range(prof.heads):
                y = torch.cat([x[layer, kv, head] for x in xs])
                cols = predictor_columns(prof.opts, prof.heads, prof.dim, head)
                w = _ridge(feats[:, cols], y)
                prof.pred_w[layer, kv, head] = 0.0
                prof.pred_w[layer, kv, head, cols] = w.float()
                if prof.opts.klt:
                    r = y.double() - feats[:, cols].double() @ w
                    _, evecs = torch.linalg.eigh(r.T @ r / r.shape[0])
                    prof.basis[layer, kv, head] = evecs.flip(1).float()
    return prof
