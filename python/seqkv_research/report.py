"""Markdown tables from experiments.py's JSON (what docs/seq_codec_design.md quotes).

  PYTHONPATH=python /usr/bin/python3 -m seqkv_research.report python/seqkv_research/results/split_a.json
"""

from __future__ import annotations

import json
import math
import sys

from .experiments import interp_bits_at


def _interp(points, kl_target, key):
    """Value of `key` (e.g. per-layer bits) where the KL curve crosses kl_target (log-linear)."""
    pts = sorted(points, key=lambda p: p["bits"])
    for a, b in zip(pts, pts[1:]):
        if a["kl"] >= kl_target >= b["kl"] and a["kl"] > 0 and b["kl"] > 0:
            f = (math.log(kl_target) - math.log(a["kl"])) / (math.log(b["kl"]) - math.log(a["kl"]))
            va, vb = a[key], b[key]
            if isinstance(va, list):
                return [x + f * (y - x) for x, y in zip(va, vb)]
            return va + f * (vb - va)
    return None


def summary(res: dict) -> str:
    out = [f"calibration files {res['cal']}, test files {res['test']}", "",
           "| codec | bits/element at KL 0.002 | at KL 0.02 | top-1 at 0.002 | profile (fp32 bytes) |",
           "| --- | --- | --- | --- | --- |"]
    for name, v in res["variants"].items():
        b2, b20 = v["bits_at_kl_0.002"], v["bits_at_kl_0.02"]
        t1 = _interp(v["points"], 0.002, "top1")
        out.append(f"| {name} | {_f(b2)} | {_f(b20)} | {_f(t1)} | {v['profile_bytes']['total']:,} |")
    out += ["", "| baseline (same test files) | bits/element | KL | top-1 |", "| --- | --- | --- | --- |"]
    for spec, b in res.get("baselines", {}).items():
        out.append(f"| {spec} | {b['bits']:.3f} | {b['kl']:.4f} | {b['top1']:.3f} |")
    return "\n".join(out)


def per_layer(res: dict, kl_target: float) -> str:
    names = list(res["variants"])
    first = res["variants"][names[0]]
    layers = len(first["points"][0]["bits_per_layer"])
    out = [f"bits/element per layer at mean KL {kl_target}", "",
           "| codec | " + " | ".join(f"L{i}" for i in range(layers)) + " | mean |",
           "| --- " * (layers + 2) + "|"]
    for name in names:
        bl = _interp(res["variants"][name]["points"], kl_target, "bits_per_layer")
        if bl is None:
            continue
        out.append(f"| {name} | " + " | ".join(f"{b:.2f}" for b in bl) +
                   f" | {sum(bl) / layers:.3f} |")
    return "\n".join(out)


def curve(res: dict, name: str) -> str:
    out = [f"curve of {name}", "", "| delta0 | bits/element (est.) | empirical entropy | mean KL | "
           "top-1 | dCE bits/token | proxy KL |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for p in res["variants"][name]["points"]:
        out.append(f"| {p['delta0']:.3f} | {p['bits']:.3f} | {p['bits_empirical']:.3f} | "
                   f"{p['kl']:.5f} | {p['top1']:.3f} | {p['dce']:+.4f} | {p['proxy']:.5f} |")
    return "\n".join(out)


def proxy_quality(res: dict, name: str) -> str:
    """How well the calibrated proxy predicts per-file KL on the test files."""
    ratios = []
    for p in res["variants"][name]["points"]:
        for f in p["files"]:
            if f["kl"] > 1e-4:
                ratios.append(f["kl"] / f["proxy"])
    ratios.sort()
    if not ratios:
        return ""
    logs = [math.log(r) for r in ratios]
    m = sum(logs) / len(logs)
    sd = math.sqrt(sum((x - m) ** 2 for x in logs) / len(logs))
    return (f"{name}: KL/proxy over {len(ratios)} (file, step) points with KL > 1e-4: median "
            f"{ratios[len(ratios) // 2]:.2f}, range {ratios[0]:.2f}..{ratios[-1]:.2f}, "
            f"geometric sd x{math.exp(sd):.2f}")


def _f(x):
    return "-" if x is None else f"{x:.3f}"


if __name__ == "__main__":
    for path in sys.argv[1:]:
        r = json.loads(open(path).read())
        print(summary(r))
        print()
        for kl in (0.002, 0.02):
            print(per_layer(r, kl))
            print()
        for name in r["variants"]:
            print(proxy_quality(r, name))
        print()
        best = min(r["variants"], key=lambda n: r["variants"][n]["bits_at_kl_0.002"] or 99)
        print(curve(r, best))
        if "rate_control" in r:
            print()
            for row in r["rate_control"]["rate"] + r["rate_control"]["guardrail"]:
                print(row)
