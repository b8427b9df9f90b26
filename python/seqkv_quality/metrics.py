"""Model-level quality of a reconstructed KV cache.

The question a lossy codec must answer is not "how far are the numbers" but "does the model still
say the same thing". So the first `prefix` positions of a dump serve as the cache, the model runs
the remaining tokens on top of it, and the next-token distributions obtained with the original cache
and with the reconstructed one are compared:

- kl_nats: mean over positions prefix..T-1 of KL(original || reconstructed), in nats;
- top1_agreement: fraction of those positions whose most likely next token is the same;
- delta_ce_bits: cross-entropy of the actual next tokens with the reconstructed cache minus with the
  original one, in bits per token, over positions prefix..T-2 (the last position has no target).

Both runs use identical arithmetic, so an identical cache gives exactly 0 and 1 (the forward is
deterministic for equal inputs). Distributions are compared in float64 from the float32 logits, so
that a KL of 1e-7 is a measurement and not rounding noise.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .dump import KvDump, check_fits_model, check_pair, load_dump
from .errors import QualityError
from .model import DEFAULT_KV_ROUND, LlamaModel

LN2 = math.log(2.0)
DEFAULT_PREFIX = 768


@dataclass
class PairMetrics:
    """One original/reconstruction comparison; field names are the JSON keys of the CLI."""

    orig: str
    recon: str
    prefix: int
    tokens: int            # T
    positions: int         # T - prefix: next-token distributions compared
    ce_positions: int      # T - prefix - 1: positions with a target token
    kl_nats: float
    kl_max_nats: float
    top1_agreement: float
    ce_orig_bits: float
    ce_recon_bits: float
    delta_ce_bits: float
    seconds: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class _Run:
    """What one cached run yields: log-probabilities over the vocabulary per compared position."""

    log_probs: torch.Tensor  # [positions, vocab] float64


def distribution_metrics(logp_orig: torch.Tensor, logp_recon: torch.Tensor,
                         targets: torch.Tensor) -> dict[str, float]:
    """KL, top-1 agreement and cross-entropies from float64 log-probabilities [P, vocab].

    targets: [P-1] actual next tokens of positions 0..P-2 (the last position has none).
    """
    kl = (logp_orig.exp() * (logp_orig - logp_recon)).sum(-1)
    # An identical pair gives exactly 0; tiny negative values cannot occur for other pairs beyond
    # float64 rounding, and are clamped so a mean of zeros stays exactly zero.
    kl = kl.clamp_min(0.0)
    agree = (logp_orig.argmax(-1) == logp_recon.argmax(-1)).to(torch.float64)
    n = targets.numel()
    if n:
        idx = targets.reshape(-1, 1)
        ce_orig = float(-logp_orig[:n].gather(1, idx).mean()) / LN2
        ce_recon = float(-logp_recon[:n].gather(1, idx).mean()) / LN2
    else:
        ce_orig = ce_recon = 0.0
    return {"kl_nats": float(kl.mean()), "kl_max_nats": float(kl.max()),
            "top1_agreement": float(agree.mean()), "ce_orig_bits": ce_orig,
            "ce_recon_bits": ce_recon, "delta_ce_bits": ce_recon - ce_orig}


def mean_metrics(pairs: list[PairMetrics]) -> dict:
    """Unweighted mean over pairs (every file counts once, as in kvdata/README.md's table).

    kl_max_nats is the maximum, positions and ce_positions the totals, pairs the count.
    """
    if not pairs:
        return {"pairs": 0}
    n = len(pairs)
    out: dict = {"pairs": n}
    for key in ("kl_nats", "top1_agreement", "ce_orig_bits", "ce_recon_bits", "delta_ce_bits"):
        out[key] = sum(getattr(p, key) for p in pairs) / n
    out["kl_max_nats"] = max(p.kl_max_nats for p in pairs)
    out["positions"] = sum(p.positions for p in pairs)
    out["ce_positions"] = sum(p.ce_positions for p in pairs)
    out["seconds"] = sum(p.seconds for p in pairs)
    return out


class QualityEvaluator:
    """Compares reconstructions against originals with one loaded model.

    The most recent original and its run are kept, so consecutive pairs with the same original (one
    dump, several codecs or settings) load and run it once; only one is kept to bound memory (a run
    holds positions x vocabulary float64 values). Not thread-safe.
    """

    def __init__(self, model: LlamaModel, prefix: int = DEFAULT_PREFIX,
                 kv_round: str = DEFAULT_KV_ROUND):
        self.model = model
        self.prefix = prefix
        self.kv_round = kv_round
        self._last_orig: tuple[Path, KvDump, _Run | None] | None = None

    def cached_run(self, dump: KvDump, k: torch.Tensor | None = None,
                   v: torch.Tensor | None = None) -> _Run:
        """Runs dump.tokens[prefix:] on a cache of the first prefix positions of k, v (default: the
        dump's own) and returns the float64 log-probabilities of the next token at each of them."""
        s = self.prefix
        k = dump.k if k is None else k
        v = dump.v if v is None else v
        res = self.model.forward(dump.tokens[s:], k[:, :, :s], v[:, :, :s], kv_round=self.kv_round,
                                 first_position=dump.first_position)
        log_probs = torch.log_softmax(res.logits.to(torch.float64), dim=-1)
        if not torch.isfinite(log_probs).all():
            raise QualityError(f"{dump.path}: the model's output is not finite with this cache "
                               "(values far outside the model's range?)")
        return _Run(log_probs)

    def compare_files(self, orig_path: str | Path, recon_path: str | Path) -> PairMetrics:
        """Loads both files, checks they belong together, and compares them."""
        start = time.perf_counter()
        resolved = Path(orig_path).resolve()
        if self._last_orig is None or self._last_orig[0] != resolved:
            self._last_orig = (resolved, load_dump(orig_path, self.model.cfg), None)
        _, orig, orig_run = self._last_orig
        recon = load_dump(recon_path, self.model.cfg)
        check_pair(orig, recon, self.prefix)
        if orig_run is None:
            orig_run = self.cached_run(orig)
            self._last_orig = (resolved, orig, orig_run)
        return self._compare(orig, orig_run, recon, str(orig_path), str(recon_path), start)

    def compare_dumps(self, orig: KvDump, recon: KvDump) -> PairMetrics:
        """Compares two loaded dumps (nothing kept); used by the self-check and the tests."""
        start = time.perf_counter()
        check_fits_model(orig, self.model.cfg)
        check_fits_model(recon, self.model.cfg)
        check_pair(orig, recon, self.prefix)
        return self._compare(orig, self.cached_run(orig), recon, str(orig.path), str(recon.path),
                             start)

    def _compare(self, orig: KvDump, orig_run: _Run, recon: KvDump, orig_name: str,
                 recon_name: str, start: float) -> PairMetrics:
        s, t = self.prefix, orig.num_tokens
        recon_run = self.cached_run(recon)
        m = distribution_metrics(orig_run.log_probs, recon_run.log_probs, orig.tokens[s + 1:])
        return PairMetrics(orig=orig_name, recon=recon_name, prefix=s, tokens=t, positions=t - s,
                           ce_positions=t - s - 1, seconds=time.perf_counter() - start, **m)
