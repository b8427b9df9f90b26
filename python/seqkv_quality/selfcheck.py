"""Self-check: is this forward pass the model that produced the dump, and is the cached path sound?

The quality numbers are only meaningful if (1) running on a cache is equivalent to running from
scratch, and (2) the model here is the one that wrote the dumps. Four checks establish that on a
real dump, each with a stated tolerance:

(a) full_vs_cached: the model's own full pass over all T tokens (no cache) against the cached run on
    the dump's first `prefix` positions: next-token KL and top-1 agreement over positions
    prefix..T-1. They differ only by the cache having been stored in bf16, so KL must be tiny.
(b) kv_vs_dump: K (after RoPE) and V that the model computes for the first `prefix` tokens against
    the dump's: storage rounding explains up to half a unit in the last place of the stored dtype;
    what is left over must be float32 noise (see kv_error), not the order-1 errors of a wrong RoPE
    convention, head order or norm.
(c) logprob_vs_dump: the model's log-probability of each actual token against the dump's `logprob`.
(d) orig_vs_orig: comparing the dump with itself gives KL exactly 0 and agreement exactly 1, i.e.
    the comparison is deterministic and has no bias of its own.

(b) and (c) use float32 K/V inside attention (kv_round "none"), the arithmetic the dumps were made
with; (a) and (d) use the evaluator's kv_round, the one `compare` uses.
"""

from __future__ import annotations

import math
import time

import torch

from .dump import KvDump, check_prefix
from .metrics import LN2, QualityEvaluator, distribution_metrics

# Tolerances, chosen from the 8 dev dumps with margin (measured values in python/README.md).
TOL_FULL_VS_CACHED_KL = 1e-4        # nats, mean over positions (measured <= 5.7e-6)
TOL_FULL_VS_CACHED_TIE = 1e-2      # nats: an argmax may flip only between near-tied tokens
                                    # (measured: one flip in 2048 positions, gap 0.004)
TOL_KV_EXCESS_REL = 1e-4            # error beyond half an ulp, relative to the layer's RMS
                                    # (measured <= 5.3e-6; a wrong RoPE theta gives 7)
TOL_KV_EXACT_FRACTION = 0.99        # elements whose rounding equals the stored value
                                    # (measured >= 0.9991)
TOL_LOGPROB_MAX_ABS = 1e-3          # nats (measured <= 5.3e-5)

_MANTISSA_BITS = {"BF16": 7, "F16": 10, "F32": 23}
_STORE_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}


def kv_error(model_kv: torch.Tensor, stored: torch.Tensor, kv_dtype: str) -> dict[str, float]:
    """Errors of stored K or V [layers, heads, S, d] against the model's float32 values.

    Storing rounds each value by up to half a unit in the last place (ulp) of the stored format, so
    only the error beyond that says something about the model: excess_rel is the largest
    max(0, |difference| - ulp/2) relative to the RMS of the same layer, i.e. float32 arithmetic
    noise (1e-6) for the same model, order 1 for a wrong RoPE, head order or weight.
    exact_fraction: share of elements where rounding the model's value gives the stored value bit
    for bit.
    """
    diff = (model_kv - stored).abs().to(torch.float64)
    _, exp = torch.frexp(stored)  # |x| = m * 2**exp, m in [0.5, 1)
    # Zeros and subnormals: the spacing there is that of the smallest normal number.
    exp = exp.clamp_min({"BF16": -125, "F16": -13, "F32": -125}[kv_dtype])
    half_ulp = torch.pow(2.0, (exp - 2 - _MANTISSA_BITS[kv_dtype]).to(torch.float64))
    rms = stored.to(torch.float64).pow(2).mean(dim=(1, 2, 3), keepdim=True).sqrt().clamp_min(1e-30)
    excess = ((diff - half_ulp).clamp_min(0.0) / rms).max()
    rounded = model_kv.to(_STORE_DTYPES[kv_dtype]).to(torch.float32)
    return {
        "max_abs_diff": float(diff.max()),
        "rel_error": float(diff.norm() / stored.to(torch.float64).norm().clamp_min(1e-300)),
        "excess_rel": float(excess),
        "exact_fraction": float((rounded == stored).to(torch.float64).mean()),
    }


def run_selfcheck(evaluator: QualityEvaluator, dump: KvDump) -> dict:
    """Runs checks (a)-(d) on one dump; returns a JSON-ready report with "passed" per check and
    overall. Raises QualityError for an unusable dump (wrong shape, prefix out of range)."""
    start = time.perf_counter()
    model, s = evaluator.model, evaluator.prefix
    check_prefix(dump, s)
    t = dump.num_tokens
    exact = model.forward(dump.tokens, kv_round="none", return_kv=True,
                          first_position=dump.first_position)
    cached = evaluator.cached_run(dump)
    report: dict = {"dump": str(dump.path), "tokens": t, "prefix": s,
                    "kv_round": evaluator.kv_round}

    # (a) Full pass (with the evaluator's K/V rounding) against the cached run.
    full = exact if evaluator.kv_round == "none" else model.forward(
        dump.tokens, kv_round=evaluator.kv_round, first_position=dump.first_position)
    full_logp = torch.log_softmax(full.logits[s:].to(torch.float64), dim=-1)
    m = distribution_metrics(full_logp, cached.log_probs, dump.tokens[s + 1:])
    # Top-1 may differ where two tokens are all but tied; the gap is measured in the full run
    # between its own choice and the cached run's.
    top_full, top_cached = full_logp.argmax(-1), cached.log_probs.argmax(-1)
    flips = (top_full != top_cached).nonzero()[:, 0]
    gaps = (full_logp[flips, top_full[flips]] - full_logp[flips, top_cached[flips]])
    max_gap = float(gaps.max()) if flips.numel() else 0.0
    report["full_vs_cached"] = {
        "kl_nats": m["kl_nats"], "kl_max_nats": m["kl_max_nats"],
        "top1_agreement": m["top1_agreement"], "top1_flips": int(flips.numel()),
        "max_flip_gap_nats": max_gap, "positions": t - s,
        "tolerance": {"kl_nats": TOL_FULL_VS_CACHED_KL,
                      "max_flip_gap_nats": TOL_FULL_VS_CACHED_TIE},
        "passed": m["kl_nats"] <= TOL_FULL_VS_CACHED_KL and max_gap <= TOL_FULL_VS_CACHED_TIE,
    }

    # (b) The model's K/V for the cached positions against the dump's.
    k_err = kv_error(exact.k[:, :, :s], dump.k[:, :, :s], dump.kv_dtype)
    v_err = kv_error(exact.v[:, :, :s], dump.v[:, :, :s], dump.kv_dtype)
    report["kv_vs_dump"] = {
        "k": k_err, "v": v_err, "stored_dtype": dump.kv_dtype,
        "tolerance": {"excess_rel": TOL_KV_EXCESS_REL, "exact_fraction": TOL_KV_EXACT_FRACTION},
        "passed": all(e["excess_rel"] <= TOL_KV_EXCESS_REL
                      and e["exact_fraction"] >= TOL_KV_EXACT_FRACTION for e in (k_err, v_err)),
    }

    # (c) Log-probabilities of the actual tokens against the dump's `logprob` (0 at position 0).
    if dump.logprob is None:
        report["logprob_vs_dump"] = {"skipped": "the dump has no logprob tensor", "passed": True}
    else:
        logp = torch.log_softmax(exact.logits[:-1].to(torch.float64), dim=-1)
        model_lp = logp.gather(1, dump.tokens[1:, None])[:, 0]
        diff = (model_lp - dump.logprob[1:].to(torch.float64)).abs()
        bpt_dump = dump.metadata.get("bits_per_token")
        report["logprob_vs_dump"] = {
            "max_abs_diff_nats": float(diff.max()), "mean_abs_diff_nats": float(diff.mean()),
            "bits_per_token_model": float(-model_lp.mean()) / LN2,
            "bits_per_token_dump": float(bpt_dump) if _is_number(bpt_dump) else None,
            "tolerance": {"max_abs_diff_nats": TOL_LOGPROB_MAX_ABS},
            "passed": float(diff.max()) <= TOL_LOGPROB_MAX_ABS,
        }

    # (d) The dump against itself: exactly no difference.
    same = evaluator.compare_dumps(dump, dump)
    report["orig_vs_orig"] = {
        "kl_nats": same.kl_nats, "top1_agreement": same.top1_agreement,
        "delta_ce_bits": same.delta_ce_bits,
        "tolerance": "exact: kl_nats == 0, top1_agreement == 1, delta_ce_bits == 0",
        "passed": same.kl_nats == 0.0 and same.top1_agreement == 1.0 and same.delta_ce_bits == 0.0,
    }
    report["passed"] = all(report[c]["passed"] for c in
                           ("full_vs_cached", "kv_vs_dump", "logprob_vs_dump", "orig_vs_orig"))
    report["seconds"] = time.perf_counter() - start
    return report


def _is_number(s: str | None) -> bool:
    try:
        return s is not None and math.isfinite(float(s))
    except (TypeError, ValueError):
        return False
