"""Model-level sensitivity of each (layer, K/V, kv_head) group of the cache to white noise.

A codec spends bits where an error costs the most KL, so it needs, per group g = (layer, K or V,
kv_head), how many nats of next-token KL one unit of squared error costs. To second order the KL is
a quadratic form of the cache error; for errors that look like white noise inside a group it is
~= sum_g s'_g * MSE_g, with MSE_g the group's squared error per cached token (summed over head_dim).
s'_g is measured by adding white Gaussian noise to group g alone and running the model:

    s'_g = sum over files of KL / (sum over files of SSE_g / cache_tokens)

- Noise has standard deviation rel_noise x the RMS of the group over the cached positions, and goes
  only to those positions (the first `prefix`; the rest are recomputed by the model anyway).
- It is added in the coding domain: keys before RoPE, values as stored. Keys are coded before RoPE
  because their statistics do not rotate with position there. Adding noise n before RoPE and then
  rotating is, RoPE being linear, k + RoPE(n): this is computed that way so that the un-noised part
  of the cache stays bit-exact (undoing and redoing the rotation would round every element) and the
  reference run is the dump's own. RoPE is orthogonal per pair, so SSE is the same in both domains.
- KL is the mean over query positions prefix..T-1 of KL(original || noisy), exactly as `compare`.
- Each group's noise comes from its own generator, seeded from (seed, file index, layer, K/V, head),
  so a run over a subset of layers gives the same numbers for those layers as a full run.

Cost: one cached run per group and file (layers x 2 x kv_heads + 1 per file).
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch

from .dump import KvDump, check_fits_model, check_prefix
from .errors import QualityError
from .metrics import QualityEvaluator, distribution_metrics
from .model import rotate_half

SENSITIVITY_FORMAT = "seqkv-sensitivity/1"
DEFAULT_REL_NOISE = 0.05
DEFAULT_SEED = 7

# progress(file_index, file_name, layer, seconds, kl): called after each layer of each file, with
# that layer's KL [2 (K, V), kv_heads] on that file.
ProgressFn = Callable[[int, str, int, float, torch.Tensor], None]


@dataclass
class SensitivityResult:
    """Per-group results; tensors are [layers, 2 (K, V), kv_heads] float64, NaN where a layer was
    not measured (the `layers` argument) or a group's squared error was zero."""

    sensitivity: torch.Tensor   # nats per unit of per-token mean squared error
    kl_mean: torch.Tensor       # mean KL over files, nats
    files: list[str]            # basenames
    cache_tokens: int
    rel_noise: float
    seed: int
    head_dim: int
    seconds: float

    def to_dict(self, model_name: str) -> dict:
        """The JSON object of `sensitivity` (format seqkv-sensitivity/1, python/README.md)."""
        layers, _, heads = self.sensitivity.shape
        return {"format": SENSITIVITY_FORMAT, "model": model_name, "layers": layers,
                "kv_heads": heads, "head_dim": self.head_dim, "key_domain": "pre_rope",
                "cache_tokens": self.cache_tokens, "rel_noise": self.rel_noise, "seed": self.seed,
                "files": self.files, "sensitivity": _nested(self.sensitivity),
                "kl_mean": _nested(self.kl_mean), "seconds": self.seconds}


def _nested(x: torch.Tensor) -> list:
    """[L, 2, H] -> nested lists, NaN as None (JSON has no NaN)."""
    return [[[None if v != v else v for v in row] for row in layer] for layer in x.tolist()]


def group_generator(seed: int, file_index: int, layer: int, kv: int, head: int) -> torch.Generator:
    """An independent, reproducible noise stream per (file, group)."""
    digest = hashlib.sha256(f"{seed}/{file_index}/{layer}/{kv}/{head}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") >> 1)


def _rope_cos_sin(evaluator: QualityEvaluator, n: int, first_position: int
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin [n, head_dim] of the model's own RoPE (its inv_freq, so rope_scaling included)."""
    inv_freq = evaluator.model.inv_freq.cpu()
    pos = torch.arange(first_position, first_position + n).to(torch.float32)
    freqs = pos[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def measure_sensitivity(evaluator: QualityEvaluator, dumps: Sequence[KvDump],
                        rel_noise: float = DEFAULT_REL_NOISE, seed: int = DEFAULT_SEED,
                        layers: Sequence[int] | None = None,
                        progress: ProgressFn | None = None) -> SensitivityResult:
    """Measures s'_g over the dumps with the evaluator's model, prefix and kv_round.

    layers: the layers to measure (default all); the others are NaN in the result. Raises
    QualityError for dumps that do not fit the model or are not longer than the prefix.
    """
    start = time.perf_counter()
    cfg = evaluator.model.cfg
    s = evaluator.prefix
    if not dumps:
        raise QualityError("no dumps to measure")
    if not rel_noise > 0:
        raise QualityError(f"rel_noise must be > 0, got {rel_noise}")
    todo = list(range(cfg.num_layers)) if layers is None else sorted(set(layers))
    if any(not 0 <= layer < cfg.num_layers for layer in todo):
        raise QualityError(f"layers {todo} outside [0, {cfg.num_layers})")
    for dump in dumps:
        check_fits_model(dump, cfg)
        check_prefix(dump, s)
    shape = (cfg.num_layers, 2, cfg.num_kv_heads)
    kl_sum = torch.zeros(shape, dtype=torch.float64)
    sse_sum = torch.zeros(shape, dtype=torch.float64)
    for fi, dump in enumerate(dumps):
        orig = evaluator.cached_run(dump).log_probs
        targets = dump.tokens[s + 1:]
        k, v = dump.k[:, :, :s].clone(), dump.v[:, :, :s].clone()
        cos, sin = _rope_cos_sin(evaluator, s, dump.first_position)
        for layer in todo:
            layer_start = time.perf_counter()
            layer_kl = torch.zeros(2, cfg.num_kv_heads, dtype=torch.float64)
            for kv, x in ((0, k), (1, v)):
                for head in range(cfg.num_kv_heads):
                    stored = x[layer, head].clone()
                    # RMS in the coding domain; for keys RoPE(-p) applied first (it preserves norms,
                    # but rounding should not decide which domain was measured).
                    coded = stored * cos - rotate_half(stored) * sin if kv == 0 else stored
                    sigma = rel_noise * float(coded.double().pow(2).mean().sqrt())
                    noise = sigma * torch.randn(stored.shape,
                                                generator=group_generator(seed, fi, layer, kv,
                                                                          head))
                    x[layer, head] = stored + (noise * cos + rotate_half(noise) * sin
                                               if kv == 0 else noise)
                    run = evaluator.cached_run(dump, k, v)
                    x[layer, head] = stored
                    layer_kl[kv, head] = distribution_metrics(orig, run.log_probs,
                                                              targets)["kl_nats"]
                    sse_sum[layer, kv, head] += float(noise.double().pow(2).sum())
            kl_sum[layer] += layer_kl
            if progress is not None:
                progress(fi, Path(dump.path).name, layer, time.perf_counter() - layer_start,
                         layer_kl)
    measured = torch.zeros(shape, dtype=torch.bool)
    measured[todo] = True
    nan = torch.full(shape, float("nan"), dtype=torch.float64)
    sens = torch.where(measured & (sse_sum > 0), kl_sum / (sse_sum / s), nan)
    kl_mean = torch.where(measured, kl_sum / len(dumps), nan)
    return SensitivityResult(sens, kl_mean, [Path(d.path).name for d in dumps], s, rel_noise,
                             seed, cfg.head_dim, time.perf_counter() - start)
