"""Command line: `python3 -m seqkv_quality compare|selfcheck ...` (interface in python/README.md).

Only this module parses flags, prints and chooses exit codes: 0 success, 1 a self-check tolerance
failed, 2 invalid input or usage (message on stderr). With --json exactly one JSON object goes to
stdout, so that seqkvctl can read it without parsing text.
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

EXIT_OK, EXIT_CHECK_FAILED, EXIT_ERROR = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--model", required=True, metavar="DIR",
                        help="Hugging Face Llama checkpoint folder (config.json + safetensors)")
    common.add_argument("--prefix", type=int, default=DEFAULT_PREFIX, metavar="S",
                        help=f"positions used as the cache (default {DEFAULT_PREFIX})")
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    common.add_argument("--kv-round", choices=sorted(KV_ROUNDINGS), default=DEFAULT_KV_ROUND,
                        help="storage of the K/V the model computes for the new tokens "
                             f"(default {DEFAULT_KV_ROUND}: float32, as the dumps were made)")
    common.add_argument("--threads", type=int, metavar="N",
                        help="torch CPU threads (default: torch's choice, one per core)")
    common.add_argument("--device", default="cpu", help="torch device (default cpu)")
    common.add_argument("--matmul", choices=MATMUL_BACKENDS, default="auto",
                        help="float32 matmul path (default auto: oneDNN on CPU)")

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


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # Usage errors: argparse prints them and exits with 2.
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise QualityError("--threads must be at least 1")
            torch.set_num_threads(args.threads)
        if args.prefix < 1:
            raise QualityError("--prefix must be at least 1")
        start = time.perf_counter()
        model = LlamaModel.load(args.model, device=args.device, matmul=args.matmul)
        load_s = time.perf_counter() - start
        evaluator = QualityEvaluator(model, prefix=args.prefix, kv_round=args.kv_round)
        if args.command == "compare":
            return _compare(args, evaluator, load_s)
        return _selfcheck(args, evaluator, load_s)
    except QualityError as e:
        print(f"seqkv_quality: error: {e}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
