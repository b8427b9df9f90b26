#!/usr/bin/env python3
"""Markdown tables from bench/seq_codec_eval.sh's JSON (calibrate.json, eval.json in OUT_DIR).

  python3 bench/seq_codec_table.py OUT_DIR [--split a]

Bits/element are real coded sizes (whole container). KL is the mean over the scored dumps of the
quality tool's mean KL (first 768 positions as the cache). "bits at KL x" reads the curve of a codec
family (seq:delta= sweep; TurboQuant 2/3/4; KIVI 2/4) at KL x by log-linear interpolation between the
two points that bracket it; "-" when no two points bracket it.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def interp(points: list[tuple[float, float, list[float] | None]], kl: float):
    """points: (bits, kl, layer_bits); returns (bits, layer_bits) at kl or None."""
    pts = sorted(points, key=lambda p: p[0])
    for a, b in zip(pts, pts[1:]):
        if a[1] >= kl >= b[1] and a[1] > 0 and b[1] > 0 and a[1] != b[1]:
            f = (math.log(kl) - math.log(a[1])) / (math.log(b[1]) - math.log(a[1]))
            layers = None
            if a[2] and b[2]:
                layers = [x + f * (y - x) for x, y in zip(a[2], b[2])]
            return a[0] + f * (b[0] - a[0]), layers
    return None


def short(spec: str) -> str:
    return ",".join(p for p in spec.split(",") if not p.startswith(("profile=", "deadzone=", "fallback=",
                                                                      "maxbits=", "seed=")))


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--split", default="a")
    args = ap.parse_args()
    out = Path(args.out)
    cal = json.loads((out / "calibrate.json").read_text())
    ev = json.loads((out / "eval.json").read_text())
    rows = ev["codecs"]
    files = [Path(f).name for f in ev["files"]]
    print(f"### Split {args.split}, predictor inputs `{cal['inputs']}`: calibrated on {', '.join(Path(f).name for f in cal['files'])}; "
          f"scored on {', '.join(files)}\n")
    print("| codec | bits/element | mean KL (nats) | top-1 | encode MB/s | decode MB/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        kl = f"{r['kl_nats']:.5f}" if "kl_nats" in r else ("recompute" if r.get("recompute_needed") else "0")
        top1 = f"{r['top1_agreement']:.3f}" if "top1_agreement" in r else "-"
        dec = f"{r['decode_mb_s']:.1f}" if "decode_mb_s" in r else "-"
        bits = (f"{r['bits_per_element']:.3f}" if not r.get("recompute_needed")
                else f"{r['bits_per_token']:.2f} bits/token")
        print(f"| `{short(r['codec'])}` | {bits} | {kl} | {top1} | {r['encode_mb_s']:.1f} | {dec} |")

    fams: dict[str, list] = {"seq (delta sweep)": [], "turboquant": [], "kivi": []}
    for r in rows:
        if "kl_nats" not in r:
            continue
        c = r["codec"]
        layers = r.get("seq", {}).get("layer_bits_per_element")
        if c.startswith("seq:") and "delta=" in c:
            fams["seq (delta sweep)"].append((r["bits_per_element"], r["kl_nats"], layers))
        elif c.startswith("turboquant:") and "outliers=0" in c:
            fams["turboquant"].append((r["bits_per_element"], r["kl_nats"], None))
        elif c.startswith("kivi:"):
            fams["kivi"].append((r["bits_per_element"], r["kl_nats"], None))
    print("\nBits/element at equal model-level quality (interpolated on each family's curve):\n")
    print("| family | bits at mean KL 0.002 | bits at mean KL 0.02 |")
    print("| --- | --- | --- |")
    seq_layers = {}
    for name, pts in fams.items():
        cells = []
        for kl in (0.002, 0.02):
            got = interp(pts, kl)
            cells.append(f"{got[0]:.2f}" if got else "-")
            if got and name.startswith("seq"):
                seq_layers[kl] = got[1]
        print(f"| {name} | {cells[0]} | {cells[1]} |")
    if seq_layers:
        n = len(next(iter(seq_layers.values())) or [])
        print("\nseq bits/element per layer at those points (layer 0 is computed from the model; "
              "its bits are the bf16 corrections):\n")
        print("| mean KL | " + " | ".join(f"L{i}" for i in range(n)) + " | L1.. mean |")
        print("| --- | " + " | ".join("---" for _ in range(n)) + " | --- |")
        for kl, layers in seq_layers.items():
            if layers:
                deep = sum(layers[1:]) / max(1, len(layers) - 1)
                print(f"| {kl} | " + " | ".join(f"{b:.2f}" for b in layers) + f" | {deep:.2f} |")

    per = ev.get("per_file", [])
    guard = [r for r in rows if r["codec"].startswith("seq:") and "kl=" in r["codec"]]
    if guard and per:
        print("\nGuardrail (seq:kl=D picks each chunk's step from the KL proxy; proxy scale "
              f"{cal.get('proxy_scale', 1):.3g} fitted on the calibration dumps, spread "
              f"x{(cal.get('proxy_fit') or {}).get('geo_std', float('nan')):.2f}):\n")
        print("| codec | bits/element | budget | mean KL | worst file KL | files within budget | "
              "guardrail raised | lossless fallbacks |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- |")
        for r in guard:
            budget = float([p for p in r["codec"].split(",") if p.startswith(("kl=", "seq:kl="))][0].split("=")[1])
            kls = [m["kl_nats"] for m in per if m["codec"] == r["codec"] and "kl_nats" in m]
            within = sum(1 for k in kls if k <= budget)
            print(f"| `{short(r['codec'])}` | {r['bits_per_element']:.3f} | {budget} | {r.get('kl_nats', 0):.5f} | "
                  f"{max(kls) if kls else 0:.5f} | {within}/{len(kls)} | {r['seq']['guardrail_raised']} | "
                  f"{r['seq']['lossless_fallbacks']} |")
    b = cal["bytes"]
    seq_pts = fams["seq (delta sweep)"]
    print(f"\nProfile: {b['total'] / 1e6:.2f} MB (predictors {b['predictor'] / 1e6:.2f}, bases "
          f"{b['basis'] / 1e6:.2f}, steps {b['steps'] / 1e6:.3f}); inputs `{cal['inputs']}`, fitted on "
          f"{cal['tokens']} tokens in {cal['seconds']:.1f} s. One 1024-token chunk of this model is "
          f"3.15 MB raw, so at 2 bits/element the profile weighs as much as "
          f"{b['total'] / (3145728 * 2 / 16):.1f} chunks; it is per model, not per chunk.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
