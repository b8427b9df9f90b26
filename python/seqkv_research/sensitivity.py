"""Model-level sensitivity of each (layer, K/V, head) group, measured on calibration files only.

s_g = KL / squared error when white Gaussian noise is added to group g alone (in the coding domain,
first `prefix` tokens, i.e. the cached ones). To second order KL is a quadratic form of the error, so
for errors spread like white noise KL ~= sum_g s_g * SSE_g; codec.weighted_error is that proxy.
"""

from __future__ import annotations

import torch

from seqkv_quality import QualityEvaluator, distribution_metrics
from seqkv_quality.dump import KvDump

from .data import Chunk, apply_rope, rope_cos_sin
from .profile import Profile, coding_domain


def as_dump(chunk: Chunk, k: torch.Tensor | None = None, v: torch.Tensor | None = None) -> KvDump:
    return KvDump(chunk.path, chunk.tokens, chunk.k if k is None else k,
                  chunk.v if v is None else v, "F32", None, {}, chunk.first_position)


def kl_of(evaluator: QualityEvaluator, chunk: Chunk, orig_logp: torch.Tensor, k: torch.Tensor,
          v: torch.Tensor) -> dict:
    run = evaluator.cached_run(as_dump(chunk), k, v)
    s = evaluator.prefix
    return distribution_metrics(orig_logp, run.log_probs, chunk.tokens[s + 1:])


def measure_sensitivity(profile: Profile, chunks: list[Chunk], evaluator: QualityEvaluator,
                        rel_noise: float = 0.05, seed: int = 7) -> torch.Tensor:
    """Fills profile.sens [L, 2, H] in place and returns it (nats per unit squared error)."""
    s = evaluator.prefix
    gen = torch.Generator().manual_seed(seed)
    kl_sum = torch.zeros(profile.layers, 2, profile.heads, dtype=torch.float64)
    sse_sum = torch.zeros_like(kl_sum)
    for chunk in chunks:
        orig = evaluator.cached_run(as_dump(chunk)).log_probs
        x = coding_domain(chunk, profile.opts.pre_rope)
        t, d = x.shape[3], x.shape[4]
        cos, sin = rope_cos_sin(t, d, chunk.theta, chunk.first_position)
        for layer in range(profile.layers):
            for kv in range(2):
                for head in range(profile.heads):
                    g = x[layer, kv, head]
                    sigma = rel_noise * float(g[:s].pow(2).mean().sqrt())
                    noise = torch.zeros_like(g)
                    noise[:s] = sigma * torch.randn(s, d, generator=gen)
                    k, v = chunk.k.clone(), chunk.v.clone()
                    if kv == 0:
                        if profile.opts.pre_rope:
                            k[layer, head] = apply_rope(g + noise, cos, sin)
                        else:
                            k[layer, head] = g + noise
                    else:
                        v[layer, head] = g + noise
                    m = kl_of(evaluator, chunk, orig, k, v)
                    kl_sum[layer, kv, head] += m["kl_nats"]
                    sse_sum[layer, kv, head] += float(noise.double().pow(2).sum())
    profile.sens = (kl_sum / sse_sum).float()
    profile.stats["sens_kl_per_group"] = (kl_sum / len(chunks)).tolist()
    return profile.sens


DEFAULT_BANDS = ((0, 4), (4, 12), (12, 28), (28, 64))


def measure_band_sensitivity(profile: Profile, chunks: list[Chunk], evaluator: QualityEvaluator,
                             bands=DEFAULT_BANDS, rel_noise: float = 0.05, seed: int = 11,
                             first_layer: int = 1) -> torch.Tensor:
    """Per-component sensitivity in each group's KLT basis, measured per band of components
    (components sorted by calibration variance). Noise is white inside the band's subspace.
    Sets profile.sens[g] to the mean over components and profile.comp_w[g, i] to the band's
    sensitivity relative to it; returns the [L, 2, H, d] per-component sensitivities. Layers below
    first_layer keep their group-level values (layer 0 is not coded when the model computes it)."""
    s = evaluator.prefix
    gen = torch.Generator().manual_seed(seed)
    d = profile.dim
    kl_sum = torch.zeros(profile.layers, 2, profile.heads, len(bands), dtype=torch.float64)
    sse_sum = torch.zeros_like(kl_sum)
    for chunk in chunks:
        orig = evaluator.cached_run(as_dump(chunk)).log_probs
        x = coding_domain(chunk, profile.opts.pre_rope)
        cos, sin = rope_cos_sin(x.shape[3], d, chunk.theta, chunk.first_position)
        for layer in range(first_layer, profile.layers):
            for kv in range(2):
                for head in range(profile.heads):
                    g = x[layer, kv, head]
                    sigma = rel_noise * float(g[:s].pow(2).mean().sqrt())
                    u = profile.basis[layer, kv, head]
                    for b, (lo, hi) in enumerate(bands):
                        noise = torch.zeros_like(g)
                        noise[:s] = (sigma * torch.randn(s, hi - lo, generator=gen)) @ u[:, lo:hi].T
                        k, v = chunk.k.clone(), chunk.v.clone()
                        if kv == 0:
                            k[layer, head] = (apply_rope(g + noise, cos, sin)
                                              if profile.opts.pre_rope else g + noise)
                        else:
                            v[layer, head] = g + noise
                        m = kl_of(evaluator, chunk, orig, k, v)
                        kl_sum[layer, kv, head, b] += m["kl_nats"]
                        sse_sum[layer, kv, head, b] += float(noise.double().pow(2).sum())
    band_sens = kl_sum / sse_sum.clamp_min(1e-300)
    comp = torch.empty(profile.layers, 2, profile.heads, d, dtype=torch.float64)
    for b, (lo, hi) in enumerate(bands):
        comp[..., lo:hi] = band_sens[..., b:b + 1]
    for layer in range(first_layer, profile.layers):
        mean = comp[layer].mean(-1)
        profile.sens[layer] = mean.float()
        profile.comp_w[layer] = (comp[layer] / mean[..., None]).float()
    # Uncoded layers (layer 0 from the model) get the typical value, so that step normalisation
    # (geometric mean over groups) and the proxy are not skewed by a placeholder.
    typical = torch.exp(torch.log(profile.sens[first_layer:]).mean())
    profile.sens[:first_layer] = typical
    profile.stats["band_sens"] = band_sens.tolist()
    return comp.float()
