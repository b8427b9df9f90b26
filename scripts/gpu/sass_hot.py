#!/usr/bin/env python3
"""The hot SASS instructions of a kernel, from scripts/gpu/ncu_sass.sh's sass.csv.

Prints the total warp instructions and stall samples, then every instruction
with at least --min-share of either (address order, with its index, executions,
stall samples and average active threads), so loops show up as runs of lines
with the same execution count.
Usage: scripts/gpu/sass_hot.py FILES_AT/sass.csv [--min-share 0.002]
"""
import argparse
import csv
import sys


def number(text):
    text = text.replace(",", "")
    return int(text) if text.isdigit() else 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv")
    parser.add_argument("--min-share", type=float, default=0.002)
    args = parser.parse_args()
    try:
        with open(args.csv, newline="") as f:
            rows = list(csv.reader(f))
    except OSError as e:
        sys.exit(f"sass_hot: {e}")
    header_at = next((i for i, r in enumerate(rows) if "Instructions Executed" in r), None)
    if header_at is None:
        sys.exit(f"{args.csv}: no 'Instructions Executed' column (not ncu --page source --csv output?)")
    header = rows[header_at]
    col = {name: header.index(name) for name in
           ("Source", "Instructions Executed", "Warp Stall Sampling (All Samples)", "Avg. Threads Executed")}
    data = [r for r in rows[header_at + 1:] if len(r) == len(header)]
    executed = [number(r[col["Instructions Executed"]]) for r in data]
    stalls = [number(r[col["Warp Stall Sampling (All Samples)"]]) for r in data]
    total, total_stalls = sum(executed), sum(stalls)
    print(f"{len(data)} instructions, {total:,} warp instructions executed, {total_stalls:,} stall samples")
    for i, r in enumerate(data):
        if executed[i] >= args.min_share * total or stalls[i] >= args.min_share * total_stalls:
            print(f"{i:5d} {executed[i]:>13,} {stalls[i]:>8,} {r[col['Avg. Threads Executed']]:>5} "
                  f"{r[col['Source']].strip()[:90]}")


if __name__ == "__main__":
    main()
