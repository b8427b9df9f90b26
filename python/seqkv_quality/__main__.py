"""Command line: `python3 -m seqkv_quality compare|selfcheck|sensitivity|tokenbits ...` (interface
in python/README.md).

Only this module parses flags, prints and chooses exit codes: 0 success, 1 a self-check tolerance
failed or a token round trip was not exact, 2 invalid input or usage (message on stderr). With
--json exactly one JSON object goes to stdout, so that seqkvctl can read it without parsing text.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Sequence

import torch

from .dump import load_dump
from .errors import QualityError
from .metrics import DEFAULT_PREFIX, PairMetrics, QualityEvaluator, mean_metrics
from .model import DEFAULT_KV_ROUND, KV_ROUNDINGS, MATMUL_BACKENDS, LlamaModel
from .selfcheck import run_selfcheck
from .sensitivity import DEFAULT_REL_NOISE, DEFAULT_SEED, measure_sensitivity
from .token_ac import DEFAULT_CHUNK, TokenCoder, load_tokens, matmul_params, round_trip

EXIT_OK, EXIT_CHECK_FAILED, EXIT_ERROR = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    base = argparse.ArgumentParser(add_help=False)
    base.add_argument("--model", required=True, metavar="DIR",
                      help="Hugging Face Llama checkpoint folder (config.json + safetensors)")
    base.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    base.add_argument("--threads", type=int, metavar="N",
                      help="torch CPU threads (default: torch's choice, one per core)")
    base.add_argument("--device", default="cpu", help="torch device (default cpu)")
    base.add_argument("--matmul", choices=MATMUL_BACKENDS, default="auto",
                      help="float32 matmul path (default auto: oneDNN on CPU)")
    prefix = argparse.ArgumentParser(add_help=False)
    prefix.add_argument("--prefix", type=int, default=DEFAULT_PREFIX, metavar="S",
                        help=f"positions used as the cache (default {DEFAULT_PREFIX})")
    common = argparse.ArgumentParser(add_help=False, parents=[base, prefix])
    common.add_argument("--kv-round", choices=sorted(KV_ROUNDINGS), default=DEFAULT_KV_ROUND,
                        help="storage of the K/V the model computes for the new tokens "
                             f"(default {DEFAULT_KV_ROUND}: float32, as the dumps were made)")

    p = argparse.ArgumentParser(prog="python3 -m seqkv_quality",
                                description="Model-level quality of reconstructed KV caches.")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("compare", parents=[common],
                       help="KL / top-1 / delta-CE of reconstructions against originals")
    c.add_argument("--orig", metavar="FILE", help="original dump (with --recon)")
    c.add_argument("--recon", metavar="FILE", help="its reconstruction (with --orig)")
    c.add_argument("--pairs", metavar="O1:R1,O2:R2",
                   help="several orig:recon pairs, comma-separated")
    c.add_argument("--manifest", metavar="FILE.json",
                   help='JSON list of {"orig": ..., "recon": ...}; relative paths are relative to '
                        "the manifest's folder")
    s = sub.add_parser("selfcheck", parents=[common],
                       help="check the forward pass against dumps the model wrote")
    s.add_argument("--dump", required=True, nargs="+", metavar="FILE",
                   help="original dump(s) with tokens, k, v (and logprob)")
    n = sub.add_parser("sensitivity", parents=[base, prefix],
                       help="KL per unit squared error of each (layer, K/V, kv_head) group")
    n.add_argument("--out", required=True, metavar="FILE.json", help="where the JSON goes")
    n.add_argument("--rel-noise", type=float, default=DEFAULT_REL_NOISE, metavar="X",
                   help=f"noise RMS relative to each group's RMS (default {DEFAULT_REL_NOISE})")
    n.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"default {DEFAULT_SEED}")
    n.add_argument("dumps", nargs="+", metavar="DUMP", help="calibration dumps")
    t = sub.add_parser("tokenbits", parents=[base],
                       help="code token ids with the model's probabilities; round trip and size")
    t.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, metavar="C",
                   help=f"positions per forward, the same at both ends (default {DEFAULT_CHUNK})")
    t.add_argument("--freq-bits", type=int, metavar="B",
                   help="frequency precision (default log2(vocab) + 11, within [16, 30])")
    t.add_argument("--max-tokens", type=int, metavar="N", help="code only the first N ids")
    t.add_argument("--no-onepass-check", action="store_true",
                   help="skip counting the tables a single whole-sequence pass would change")
    t.add_argument("files", nargs="+", metavar="FILE",
                   help="dumps (.safetensors, their `tokens`) or raw ids (.u16, .i32)")
    return p


def _pairs_from_args(args: argparse.Namespace) -> tuple[list[tuple[str, str]], bool]:
    """Returns the pairs and whether the multi-pair output shape was asked for."""
    single = args.orig is not None or args.recon is not None
    modes = int(single) + int(args.pairs is not None) + int(args.manifest is not None)
    if modes != 1:
        raise QualityError("give exactly one of --orig/--recon, --pairs, --manifest")
    if single:
        if args.orig is None or args.recon is None:
            raise QualityError("--orig and --recon go together")
        return [(args.orig, args.recon)], False
    if args.pairs is not None:
        pairs = []
        for item in args.pairs.split(","):
            parts = item.split(":")
            if len(parts) != 2 or not all(parts):
                raise QualityError(f"--pairs: {item!r} is not ORIG:RECON (paths containing ':' or "
                                   "',' need --manifest)")
            pairs.append((parts[0], parts[1]))
        return pairs, True
    manifest = Path(args.manifest)
    try:
        entries = json.loads(manifest.read_text())
    except OSError as e:
        raise QualityError(f"{manifest}: cannot read: {e.strerror or e}") from e
    except json.JSONDecodeError as e:
        raise QualityError(f"{manifest}: not valid JSON: {e}") from e
    if not isinstance(entries, list) or not entries:
        raise QualityError(f'{manifest}: expected a non-empty JSON list of {{"orig", "recon"}}')
    pairs = []
    for i, e in enumerate(entries):
        if (not isinstance(e, dict) or not isinstance(e.get("orig"), str)
                or not isinstance(e.get("recon"), str)):
            raise QualityError(f'{manifest}: entry {i} is not {{"orig": str, "recon": str}}')
        pairs.append((str(manifest.parent / e["orig"]), str(manifest.parent / e["recon"])))
    return pairs, True


def _fmt_pair_table(model: str, prefix: int, kv_round: str, rows: list[dict],
                    mean: dict | None) -> str:
    lines = [f"model {model}  prefix {prefix}  kv_round {kv_round}",
             f"{'orig':<28} {'recon':<36} {'pos':>5} {'KL (nats)':>10} {'top-1':>7} "
             f"{'dCE bits/tok':>13} {'s':>6}"]
    for r in rows:
        if "error" in r:
            lines.append(f"{_short(r['orig'], 28)} {_short(r['recon'], 36)} error: {r['error']}")
        else:
            lines.append(f"{_short(r['orig'], 28)} {_short(r['recon'], 36)} {r['positions']:>5} "
                         f"{r['kl_nats']:>10.3g} {r['top1_agreement']:>7.4f} "
                         f"{r['delta_ce_bits']:>+13.5f} {r['seconds']:>6.2f}")
    if mean is not None and mean.get("pairs"):
        lines.append(f"{'mean of ' + str(mean['pairs']) + ' pairs':<65} {mean['positions']:>5} "
                     f"{mean['kl_nats']:>10.3g} {mean['top1_agreement']:>7.4f} "
                     f"{mean['delta_ce_bits']:>+13.5f} {mean['seconds']:>6.2f}")
    return "\n".join(lines)


def _short(path: str, width: int) -> str:
    name = Path(path).name if len(path) > width else path
    return f"{name:<{width}}"


def _compare(args: argparse.Namespace, evaluator: QualityEvaluator, load_s: float) -> int:
    pairs, multi = _pairs_from_args(args)
    rows: list[dict] = []
    ok: list[PairMetrics] = []
    for orig, recon in pairs:
        try:
            m = evaluator.compare_files(orig, recon)
        except QualityError as e:
            if not multi:
                raise
            print(f"seqkv_quality: error: {e}", file=sys.stderr)
            rows.append({"orig": orig, "recon": recon, "error": str(e)})
            continue
        ok.append(m)
        rows.append(m.to_dict())
    failed = len(rows) - len(ok)
    context = {"model": args.model, "prefix": args.prefix, "kv_round": args.kv_round}
    if not multi:
        out = {**rows[0], **context, "model_load_seconds": load_s}
        text = _fmt_pair_table(args.model, args.prefix, args.kv_round, rows, None)
    else:
        mean = mean_metrics(ok)
        out = {**context, "pairs": rows, "mean": mean, "failed": failed,
               "model_load_seconds": load_s}
        text = _fmt_pair_table(args.model, args.prefix, args.kv_round, rows, mean)
    print(json.dumps(out, allow_nan=False) if args.json else text)
    return EXIT_ERROR if failed else EXIT_OK


def _fmt_selfcheck(r: dict) -> str:
    def mark(c: dict) -> str:
        return "ok" if c["passed"] else "FAIL"
    a, b, c, d = (r["full_vs_cached"], r["kv_vs_dump"], r["logprob_vs_dump"], r["orig_vs_orig"])
    lines = [f"{r['dump']} ({r['tokens']} tokens, prefix {r['prefix']}, kv_round {r['kv_round']}): "
             f"{'PASS' if r['passed'] else 'FAIL'} [{r['seconds']:.2f} s]",
             f"  (a) full vs cached   KL {a['kl_nats']:.3g} nats (max {a['kl_max_nats']:.3g}), "
             f"top-1 {a['top1_agreement']:.4f} ({a['top1_flips']} flips, gap <= "
             f"{a['max_flip_gap_nats']:.2g} nats)   [tol KL <= {a['tolerance']['kl_nats']:g}, "
             f"flips only at ties < {a['tolerance']['max_flip_gap_nats']:g} nats] {mark(a)}"]
    for name in ("k", "v"):
        e = b[name]
        lines.append(f"  (b) {name} vs dump         max |diff| {e['max_abs_diff']:.3g}, rel "
                     f"{e['rel_error']:.3g}, beyond {b['stored_dtype']} rounding "
                     f"{e['excess_rel']:.3g} x RMS, {b['stored_dtype']}-exact "
                     f"{100 * e['exact_fraction']:.3f}%   [tol excess <= "
                     f"{b['tolerance']['excess_rel']:g}, exact >= "
                     f"{100 * b['tolerance']['exact_fraction']:g}%] {mark(b)}")
    if "skipped" in c:
        lines.append(f"  (c) logprob vs dump  skipped: {c['skipped']}")
    else:
        bpt = c["bits_per_token_dump"]
        lines.append(f"  (c) logprob vs dump  max |diff| {c['max_abs_diff_nats']:.3g} nats (mean "
                     f"{c['mean_abs_diff_nats']:.3g}); bits/token model "
                     f"{c['bits_per_token_model']:.5f}, dump "
                     f"{'-' if bpt is None else format(bpt, '.5f')}   [tol <= "
                     f"{c['tolerance']['max_abs_diff_nats']:g}] {mark(c)}")
    lines.append(f"  (d) orig vs orig     KL {d['kl_nats']:g}, top-1 {d['top1_agreement']:g}, "
                 f"dCE {d['delta_ce_bits']:g}   [exact] {mark(d)}")
    return "\n".join(lines)


def _selfcheck(args: argparse.Namespace, evaluator: QualityEvaluator, load_s: float) -> int:
    reports = [run_selfcheck(evaluator, load_dump(path, evaluator.model.cfg)) for path in args.dump]
    passed = all(r["passed"] for r in reports)
    if args.json:
        context = {"model": args.model, "model_load_seconds": load_s}
        out = ({**reports[0], **context} if len(reports) == 1
               else {**context, "prefix": args.prefix, "kv_round": args.kv_round,
                     "passed": passed, "dumps": reports})
        print(json.dumps(out, allow_nan=False))
    else:
        print(f"model {args.model} (loaded in {load_s:.2f} s)")
        print("\n".join(_fmt_selfcheck(r) for r in reports))
    return EXIT_OK if passed else EXIT_CHECK_FAILED


def _sensitivity(args: argparse.Namespace, model: LlamaModel) -> int:
    if not args.rel_noise > 0:
        raise QualityError("--rel-noise must be > 0")
    dumps = [load_dump(path, model.cfg) for path in args.dumps]  # every input checked up front
    evaluator = QualityEvaluator(model, prefix=args.prefix)
    cfg = model.cfg

    def progress(fi: int, name: str, layer: int, seconds: float, kl: torch.Tensor) -> None:
        row = lambda r: " ".join(f"{x:.3g}" for x in r.tolist())  # noqa: E731
        print(f"sensitivity: file {fi + 1}/{len(dumps)} {name} layer {layer + 1}/"
              f"{cfg.num_layers}: KL K [{row(kl[0])}] V [{row(kl[1])}] ({seconds:.1f} s)",
              file=sys.stderr, flush=True)

    result = measure_sensitivity(evaluator, dumps, rel_noise=args.rel_noise, seed=args.seed,
                                 progress=progress)
    out = result.to_dict(Path(args.model).resolve().name)
    text = json.dumps(out, allow_nan=False)
    out_path = Path(args.out)
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(text + "\n")
    except OSError as e:
        raise QualityError(f"{out_path}: cannot write: {e.strerror or e}") from e
    if args.json:
        print(text)
    else:
        print(f"sensitivity (nats per unit of per-token mean squared error), {len(dumps)} files, "
              f"{args.prefix} cached tokens, rel_noise {args.rel_noise}: {out_path} "
              f"[{result.seconds:.1f} s]")
        for layer, (ks, vs) in enumerate(out["sensitivity"]):
            print(f"  layer {layer}: K {' '.join(f'{x:.3g}' for x in ks)}   "
                  f"V {' '.join(f'{x:.3g}' for x in vs)}")
    return EXIT_OK


_MEAN_KEYS = ("bits_per_token", "ideal_bits_per_token", "table_bits_per_token",
              "zstd19_int32_bits_per_token", "zstd19_u16_bits_per_token")
_SUM_KEYS = ("tokens", "coded_bytes", "encode_seconds", "decode_seconds", "encoder_forwards",
             "decoder_forwards", "decoder_rows", "forward_flops", "decoder_flops",
             "table_mismatches")


def _tokenbits(args: argparse.Namespace, model: LlamaModel, load_s: float) -> int:
    if args.max_tokens is not None and args.max_tokens < 1:
        raise QualityError("--max-tokens must be at least 1")
    coder = TokenCoder(model, chunk=args.chunk, freq_bits=args.freq_bits)
    inputs = []
    for path in args.files:  # every input read and checked before the slow part
        tokens = load_tokens(path)[:args.max_tokens]
        try:
            coder.check_tokens(tokens)
        except QualityError as e:
            raise QualityError(f"{path}: {e}") from e
        inputs.append((path, tokens))
    reports = []
    for path, tokens in inputs:
        r = round_trip(coder, tokens, Path(path).name, check_onepass=not args.no_onepass_check)
        reports.append(r.to_dict())
        print(f"tokenbits: {r.file}: {r.tokens} tokens, {r.bits_per_token:.3f} bits/token (ideal "
              f"{r.ideal_bits_per_token:.3f}), encode {r.encode_seconds:.1f} s, decode "
              f"{r.decode_seconds:.1f} s, round trip {'ok' if r.round_trip_ok else 'FAILED'}",
              file=sys.stderr, flush=True)
    mean: dict = {"files": len(reports)}
    for key in _MEAN_KEYS:
        vals = [r[key] for r in reports if r[key] is not None]
        mean[key] = sum(vals) / len(vals) if len(vals) == len(reports) else None
    for key in _SUM_KEYS:
        mean[key] = sum(r[key] for r in reports)
    mean["pooled_bits_per_token"] = 8.0 * mean["coded_bytes"] / mean["tokens"]
    failed = sum(not r["round_trip_ok"] for r in reports)
    out = {"format": "seqkv-tokenbits/1", "model": Path(args.model).resolve().name,
           "vocab": model.cfg.vocab_size, "chunk": coder.chunk, "freq_bits": coder.freq_bits,
           "matmul_params": matmul_params(model), "threads": torch.get_num_threads(),
           "files": reports, "mean": mean, "failed": failed, "model_load_seconds": load_s}
    if args.json:
        print(json.dumps(out, allow_nan=False))
    else:
        def z(x: float | None) -> str:
            return "-" if x is None else f"{x:.2f}"
        print(f"model {out['model']}  chunk {coder.chunk}  freq_bits {coder.freq_bits}  "
              f"threads {out['threads']}")
        print(f"{'file':<24} {'tokens':>6} {'bytes':>6} {'bits/tok':>8} {'ideal':>6} "
              f"{'zstd i32':>8} {'zstd u16':>8} {'enc s':>6} {'dec s':>6} round trip")
        for r in reports + [{**mean, "file": f"mean of {len(reports)}", "round_trip_ok":
                             not failed}]:
            print(f"{_short(r['file'], 24)} {r['tokens']:>6} {r['coded_bytes']:>6} "
                  f"{r['bits_per_token']:>8.3f} {r['ideal_bits_per_token']:>6.3f} "
                  f"{z(r['zstd19_int32_bits_per_token']):>8} "
                  f"{z(r['zstd19_u16_bits_per_token']):>8} {r['encode_seconds']:>6.1f} "
                  f"{r['decode_seconds']:>6.1f} {'ok' if r['round_trip_ok'] else 'FAILED'}")
    return EXIT_CHECK_FAILED if failed else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # Usage errors: argparse prints them and exits with 2.
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise QualityError("--threads must be at least 1")
            torch.set_num_threads(args.threads)
        if getattr(args, "prefix", 1) < 1:
            raise QualityError("--prefix must be at least 1")
        start = time.perf_counter()
        model = LlamaModel.load(args.model, device=args.device, matmul=args.matmul)
        load_s = time.perf_counter() - start
        if args.command == "sensitivity":
            return _sensitivity(args, model)
        if args.command == "tokenbits":
            return _tokenbits(args, model, load_s)
        evaluator = QualityEvaluator(model, prefix=args.prefix, kv_round=args.kv_round)
        if args.command == "compare":
            return _compare(args, evaluator, load_s)
        return _selfcheck(args, evaluator, load_s)
    except QualityError as e:
        print(f"seqkv_quality: error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
