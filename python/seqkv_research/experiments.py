"""The bits-vs-KL experiment: every codec in one run, calibrated on some files, scored on others.

  PYTHONPATH=python /usr/bin/python3 -m seqkv_research.experiments --cal 0,1,2,3 --test 4,5,6,7 \
      --out python/seqkv_research/results/split_a.json

For each prototype variant: calibrate (predictors, KLT) and measure group sensitivities on the
calibration files, then sweep the global step delta0 on the test files (the same delta0 for every
file: constant slope, the RD-optimal way to share bits between files) and record the mean entropy-
estimated bits/element and the mean model-level KL. Baselines (TurboQuant, KIVI) are recomputed on
the same test files with seqkvctl when its binary exists.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import subprocess
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import torch

from seqkv_quality import LlamaModel, QualityEvaluator, load_dump

from .codec import (decode, encode, encode_at_distortion, encode_at_rate, refit_closed_loop,
                    to_cache, weighted_error)
from .data import MODEL_DIR, ModelSide, dev_paths, load_chunk
from .profile import CodecOptions, calibrate
from .sensitivity import as_dump, kl_of, measure_band_sensitivity, measure_sensitivity

SEQKVCTL = Path(__file__).resolve().parents[2] / "build" / "tools" / "seqkvctl" / "seqkvctl"
BASELINES = ["turboquant:bits=2", "turboquant:bits=3", "turboquant:bits=4", "kivi:bits=2",
             "kivi:bits=4"]

# name -> (options, sensitivity mode "group" | "bands", closed-loop refit delta0 or None)
VARIANTS = {
    "full": (CodecOptions(), "group", None),
    "no_sensitivity": (CodecOptions(sensitivity=False), "group", None),
    "no_klt": (CodecOptions(klt=False), "group", None),
    "no_xlayer": (CodecOptions(cross_layer=False), "group", None),
    "post_rope": (CodecOptions(pre_rope=False), "group", None),
    "layer0_coded": (CodecOptions(layer0_from_model=False), "group", None),
    "deadzone0.35": (CodecOptions(deadzone=0.35), "group", None),
    "bands": (CodecOptions(), "bands", None),
    "bands_refit": (CodecOptions(), "bands", 0.5),
    "bands_refit_dz": (CodecOptions(deadzone=0.35), "bands", 0.5),
    "refit": (CodecOptions(), "group", 0.5),
    "same_head": (CodecOptions(xlayer_inputs="same"), "group", None),
    "same_head_refit_dz": (CodecOptions(xlayer_inputs="same", deadzone=0.35), "bands", 0.5),
}
DELTAS = [0.03 * 1.45 ** i for i in range(13)]
PROXY_FIT_DELTAS = (0.2, 0.6)


def interp_bits_at(points: list[dict], kl_target: float) -> float | None:
    """bits/element where the mean-KL curve crosses kl_target (log-log interpolation)."""
    pts = sorted(points, key=lambda p: p["bits"])
    for a, b in zip(pts, pts[1:]):
        if a["kl"] >= kl_target >= b["kl"] and a["kl"] > 0 and b["kl"] > 0:
            f = (math.log(kl_target) - math.log(a["kl"])) / (math.log(b["kl"]) - math.log(a["kl"]))
            return a["bits"] + f * (b["bits"] - a["bits"])
    return None


def fit_proxy_scale(prof, cal, side, evaluator, log):
    """KL / proxy on the calibration files' own encodes (the guardrail's calibration)."""
    prof.proxy_scale = 1.0
    kl = proxy = 0.0
    for delta0 in PROXY_FIT_DELTAS:
        for c in cal:
            logp = evaluator.cached_run(as_dump(c)).log_probs
            _, recon = encode(c, prof, delta0, side)
            k, v = to_cache(recon, c, prof.opts.pre_rope)
            kl += kl_of(evaluator, c, logp, k, v)["kl_nats"]
            proxy += weighted_error(recon, c, prof, evaluator.prefix)[0]
    prof.proxy_scale = kl / proxy
    log(f"  proxy scale (KL / weighted SSE on calibration encodes) {prof.proxy_scale:.3f}")


def run_variant(name, spec, cal, test, side, evaluator, orig_logp, sens_cache, log):
    t0 = time.time()
    opts, sens_mode, refit = spec
    prof = calibrate(cal, opts, side)
    if refit is not None:
        prof = refit_closed_loop(prof, cal, refit, side)
    if sens_mode == "group":
        key = opts.pre_rope
        if key not in sens_cache:
            sens_cache[key] = measure_sensitivity(copy.deepcopy(prof), cal, evaluator).clone()
        prof.sens = sens_cache[key].clone()
    else:
        key = ("bands", opts.pre_rope, opts.layer0_from_model, refit)  # depends on the bases
        if key not in sens_cache:
            first = 1 if opts.layer0_from_model else 0
            measure_band_sensitivity(prof, cal, evaluator, first_layer=first)
            sens_cache[key] = (prof.sens.clone(), prof.comp_w.clone())
        prof.sens, prof.comp_w = (t.clone() for t in sens_cache[key])
    log(f"  {name}: calibrated in {time.time() - t0:.0f} s")
    fit_proxy_scale(prof, cal, side, evaluator, log)
    points = []
    for delta0 in DELTAS:
        per_file = []
        for c, logp in zip(test, orig_logp):
            enc, recon = encode(c, prof, delta0, side)
            k, v = to_cache(recon, c, opts.pre_rope)
            m = kl_of(evaluator, c, logp, k, v)
            proxy, sse = weighted_error(recon, c, prof, evaluator.prefix)
            per_file.append({"bits": enc.bits_per_element,
                             "bits_empirical": enc.bits_empirical / enc.elements,
                             "bits_per_layer": [b / (enc.elements / prof.layers)
                                                for b in enc.bits_per_layer],
                             "kl": m["kl_nats"], "top1": m["top1_agreement"],
                             "dce": m["delta_ce_bits"], "proxy": proxy,
                             "sse_per_layer": sse.sum(dim=(1, 2)).tolist()})
        n = len(per_file)
        pt = {"delta0": delta0}
        for key_ in ("bits", "bits_empirical", "kl", "top1", "dce", "proxy"):
            pt[key_] = sum(f[key_] for f in per_file) / n
        pt["bits_per_layer"] = [sum(f["bits_per_layer"][i] for f in per_file) / n
                                for i in range(prof.layers)]
        pt["files"] = per_file
        points.append(pt)
        log(f"  {name} delta0 {delta0:.4f}: {pt['bits']:.3f} b/e (emp {pt['bits_empirical']:.3f}) "
            f"KL {pt['kl']:.5f} top1 {pt['top1']:.3f} proxy {pt['proxy']:.5f}")
    res = {"options": asdict(opts), "sens_mode": sens_mode, "refit_delta0": refit,
           "proxy_scale": prof.proxy_scale, "profile_bytes": prof.size_bytes(), "points": points,
           "bits_at_kl_0.002": interp_bits_at(points, 0.002),
           "bits_at_kl_0.02": interp_bits_at(points, 0.02),
           "sens": prof.sens.tolist(), "seconds": time.time() - t0}
    log(f"{name}: bits@KL0.002 {res['bits_at_kl_0.002']}, bits@KL0.02 {res['bits_at_kl_0.02']}, "
        f"profile {res['profile_bytes']['total']} B, {res['seconds']:.0f} s")
    return res, prof


def run_baselines(test, evaluator, orig_logp, log):
    if not SEQKVCTL.exists():
        log(f"no {SEQKVCTL}; baselines skipped")
        return {}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for spec in BASELINES:
            rows = []
            for c, logp in zip(test, orig_logp):
                dst = Path(tmp) / "recon.safetensors"
                r = subprocess.run([str(SEQKVCTL), "codec", "roundtrip", "--codec", spec, "--in",
                                    str(c.path), "--out", str(dst), "--json"],
                                   capture_output=True, text=True, check=True)
                info = json.loads(r.stdout)
                d = load_dump(dst)
                m = kl_of(evaluator, c, logp, d.k, d.v)
                rows.append({"bits": info["bits_per_element"], "kl": m["kl_nats"],
                             "top1": m["top1_agreement"]})
            n = len(rows)
            out[spec] = {k: sum(r[k] for r in rows) / n for k in ("bits", "kl", "top1")}
            log(f"  baseline {spec}: {out[spec]}")
    return out


def rate_control_demo(prof, test, side, evaluator, orig_logp, log):
    """Per file: hit a bits/element target, and a KL-proxy target (the guardrail)."""
    out = {"rate": [], "guardrail": []}
    for target in (2.0, 1.5):
        for c, logp in zip(test, orig_logp):
            enc, recon = encode_at_rate(c, prof, target, side)
            dec = decode(enc, c.tokens, c.theta, c.first_position, prof, side)
            k, v = to_cache(recon, c, prof.opts.pre_rope)
            m = kl_of(evaluator, c, logp, k, v)
            out["rate"].append({"file": c.path.name, "target": target,
                                "bits": enc.bits_per_element, "kl": m["kl_nats"],
                                "decode_exact": bool(torch.equal(dec, recon))})
    for target in (0.002, 0.02):
        for c, logp in zip(test, orig_logp):
            enc, recon, proxy = encode_at_distortion(c, prof, target, side, evaluator.prefix)
            k, v = to_cache(recon, c, prof.opts.pre_rope)
            m = kl_of(evaluator, c, logp, k, v)
            out["guardrail"].append({"file": c.path.name, "target_proxy": target, "proxy": proxy,
                                     "bits": enc.bits_per_element, "kl": m["kl_nats"]})
    for r in out["rate"]:
        log(f"  rate {r}")
    for r in out["guardrail"]:
        log(f"  guardrail {r}")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cal", default="0,1,2,3")
    ap.add_argument("--test", default="4,5,6,7")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rate-variant", default="full", help="variant for the rate-control demo")
    ap.add_argument("--no-baselines", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    paths = dev_paths()
    cal = [load_chunk(paths[int(i)]) for i in args.cal.split(",")]
    test = [load_chunk(paths[int(i)]) for i in args.test.split(",")]
    side = ModelSide()
    evaluator = QualityEvaluator(LlamaModel.load(MODEL_DIR))

    def log(msg):
        print(time.strftime("%H:%M:%S"), msg, flush=True)

    orig_logp = [evaluator.cached_run(as_dump(c)).log_probs for c in test]
    results = {"cal": args.cal, "test": args.test, "variants": {}}
    results["baselines"] = {} if args.no_baselines else run_baselines(test, evaluator, orig_logp, log)
    sens_cache: dict = {}
    full_prof = None
    for name in args.variants.split(","):
        res, prof = run_variant(name, VARIANTS[name], cal, test, side, evaluator, orig_logp,
                                sens_cache, log)
        results["variants"][name] = res
        if name == args.rate_variant:
            full_prof = prof
        Path(args.out).write_text(json.dumps(results, indent=1))
    if full_prof is not None:
        results["rate_control"] = rate_control_demo(full_prof, test, side, evaluator, orig_logp, log)
    Path(args.out).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
