"""Open-loop, per-layer measurements of what each tool buys (no model runs; seconds).

For every (layer, K/V) it fits on calibration files and measures on held-out files the residual
variances in a basis, and converts them to the Gaussian reverse-water-filling rate at a fixed
distortion D: R(D) = mean_i max(0, 0.5 log2(var_i / D)) bits/element. The gain of a tool is the
drop of R(D) when it is added, at the same D. D is set per (layer, K/V) so that the plain starting
point (post-RoPE, mean removed, variance-equalising random rotation) needs `start_bits`.

Tools, added in this order (each row adds one):
  base      post-RoPE keys / values, per-component mean removed, random rotation
  pre_rope  keys before RoPE (values unchanged)
  klt       per-group KLT fitted at calibration instead of the rotation
  xlayer    linear prediction from the previous layer's K (pre-RoPE) and V of all heads
  token     linear prediction of the remaining residual from the previous token's residual
Layer 0 with the model's weights is exact (0 bits), reported apart.
"""

from __future__ import annotations

import math

import torch

from .data import Chunk, ModelSide, rope_cos_sin, undo_rope
from .profile import _random_rotation, _ridge, layer_features

TOOLS = ["base", "pre_rope", "klt", "xlayer", "token"]


def _domain(c: Chunk, pre: bool) -> torch.Tensor:
    k = c.k
    if pre:
        cos, sin = rope_cos_sin(c.tokens.numel(), k.shape[-1], c.theta, c.first_position)
        k = undo_rope(k, cos, sin)
    return torch.stack([k, c.v], 1).double()


def _rate(var: torch.Tensor, dist: float) -> float:
    return float(torch.clamp(0.5 * torch.log2(var / dist), min=0).mean())


def _resid(cal_x, cal_f, test_x, test_f):
    w = _ridge(torch.cat(cal_f), torch.cat(cal_x)).double()
    return ([x - f.double() @ w for x, f in zip(cal_x, cal_f)],
            [x - f.double() @ w for x, f in zip(test_x, test_f)])


def _token_resid(cal_r, test_r):
    """Predict r_t from r_{t-1} (open loop), fitted on cal."""
    def feats(r):
        prev = torch.cat([torch.zeros(1, r.shape[1], dtype=r.dtype), r[:-1]])
        return torch.cat([prev, torch.ones(r.shape[0], 1, dtype=r.dtype)], 1)
    return _resid(cal_r, [feats(r) for r in cal_r], test_r, [feats(r) for r in test_r])


def _basis_vars(cal_r, test_r, klt: bool, seed: int) -> torch.Tensor:
    if klt:
        r = torch.cat(cal_r)
        _, u = torch.linalg.eigh(r.T @ r / r.shape[0])
    else:
        u = _random_rotation(cal_r[0].shape[1], seed).double()
    t = torch.cat(test_r) @ u
    return t.pow(2).mean(0)


def per_layer_gains(cal: list[Chunk], test: list[Chunk], start_bits: float) -> dict:
    """{'layers': [{layer, kv, rates: {tool: bits}, energy: {tool: residual energy fraction}}]}"""
    dom = {pre: ([_domain(c, pre) for c in cal], [_domain(c, pre) for c in test])
           for pre in (False, True)}
    rows = []
    L, _, H = dom[True][0][0].shape[:3]
    for layer in range(L):
        for kv in range(2):
            rates = {t: 0.0 for t in TOOLS}
            energy = {t: 0.0 for t in TOOLS}
            total = 0.0
            for head in range(H):
                seed = 100 * layer + 10 * kv + head
                stages = {}
                for pre in (False, True):
                    cx = [x[layer, kv, head] for x in dom[pre][0]]
                    tx = [x[layer, kv, head] for x in dom[pre][1]]
                    ones_c = [torch.ones(x.shape[0], 1, dtype=x.dtype) for x in cx]
                    ones_t = [torch.ones(x.shape[0], 1, dtype=x.dtype) for x in tx]
                    stages[pre] = _resid(cx, ones_c, tx, ones_t)
                base_c, base_t = stages[False]
                pre_c, pre_t = stages[True]
                if layer > 0:
                    cf = [layer_features(x[layer - 1]).double() for x in dom[True][0]]
                    tf = [layer_features(x[layer - 1]).double() for x in dom[True][1]]
                    cx = [x[layer, kv, head] for x in dom[True][0]]
                    tx = [x[layer, kv, head] for x in dom[True][1]]
                    xl_c, xl_t = _resid(cx, cf, tx, tf)
                else:
                    xl_c, xl_t = pre_c, pre_t
                tok_c, tok_t = _token_resid(xl_c, xl_t)
                v = {"base": _basis_vars(base_c, base_t, False, seed),
                     "pre_rope": _basis_vars(pre_c, pre_t, False, seed),
                     "klt": _basis_vars(pre_c, pre_t, True, seed),
                     "xlayer": _basis_vars(xl_c, xl_t, True, seed),
                     "token": _basis_vars(tok_c, tok_t, True, seed)}
                # D such that the base (equal variances after rotation) costs start_bits.
                dist = float(v["base"].mean()) * 2.0 ** (-2 * start_bits)
                raw = float(torch.cat([x[layer, kv, head] for x in dom[False][1]]).pow(2).mean())
                for t in TOOLS:
                    rates[t] += _rate(v[t], dist) / H
                    energy[t] += float(v[t].mean()) / H / raw
                total += 1
            rows.append({"layer": layer, "kv": "KV"[kv], "rates": rates, "energy": energy})
    return {"start_bits": start_bits, "rows": rows}


def token_axis_raw(cal: list[Chunk], test: list[Chunk]) -> list[dict]:
    """Fact check: energy left when predicting x_t from x_{t-1} (mean removed first), per layer,
    for post-RoPE K, pre-RoPE K and V."""
    out = []
    for pre in (False, True):
        cd = [_domain(c, pre) for c in cal]
        td = [_domain(c, pre) for c in test]
        L, _, H = cd[0].shape[:3]
        for layer in range(L):
            for kv in range(2):
                if pre and kv == 1:
                    continue
                num = den = 0.0
                for head in range(H):
                    cx = [x[layer, kv, head] for x in cd]
                    tx = [x[layer, kv, head] for x in td]
                    ones_c = [torch.ones(x.shape[0], 1, dtype=x.dtype) for x in cx]
                    ones_t = [torch.ones(x.shape[0], 1, dtype=x.dtype) for x in tx]
                    mc, mt = _resid(cx, ones_c, tx, ones_t)
                    _, tr = _token_resid(mc, mt)
                    num += float(torch.cat(tr).pow(2).sum())
                    den += float(torch.cat(mt).pow(2).sum())
                out.append({"layer": layer, "what": ("V" if kv else ("K pre-RoPE" if pre else
                                                                       "K post-RoPE")),
                            "energy_left": num / den})
    return out


def layer0_exactness(chunks: list[Chunk], side: ModelSide) -> dict:
    """Share of layer-0 elements the model reproduces bit-exactly after bf16 rounding."""
    from .data import apply_rope
    exact_k = exact_v = n = 0
    for c in chunks:
        k0, v0 = side.layer0_kv(c.tokens)
        cos, sin = rope_cos_sin(c.tokens.numel(), k0.shape[-1], c.theta, c.first_position)
        exact_k += int((apply_rope(k0, cos, sin).bfloat16().float() == c.k[0]).sum())
        exact_v += int((v0.bfloat16().float() == c.v[0]).sum())
        n += c.k[0].numel()
    return {"k_exact_fraction": exact_k / n, "v_exact_fraction": exact_v / n,
            "macs_per_token": side.w["embed_tokens.weight"].shape[1] * 2 * side.kv_heads * side.head_dim}


def fmt_gains(g: dict) -> str:
    lines = [f"rate (bits/element) at the distortion where 'base' needs {g['start_bits']} bits"]
    lines.append("layer kv " + " ".join(f"{t:>9}" for t in TOOLS))
    for r in g["rows"]:
        lines.append(f"{r['layer']:>5} {r['kv']:>2} " +
                     " ".join(f"{r['rates'][t]:>9.3f}" for t in TOOLS))
    return "\n".join(lines)


if __name__ == "__main__":
    import json
    import sys
    torch.set_num_threads(1)
    from .data import dev_paths, load_chunk
    chunks = [load_chunk(p) for p in dev_paths()]
    res = {"gains_3": per_layer_gains(chunks[:4], chunks[4:], 3.0),
           "gains_1.5": per_layer_gains(chunks[:4], chunks[4:], 1.5),
           "token_axis": token_axis_raw(chunks[:4], chunks[4:]),
           "layer0": layer0_exactness(chunks, ModelSide())}
    print(fmt_gains(res["gains_3"]))
    print(fmt_gains(res["gains_1.5"]))
    for r in res["token_axis"]:
        print(r)
    print(res["layer0"])
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(res, f, indent=1)
