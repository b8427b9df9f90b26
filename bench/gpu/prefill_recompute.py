#!/usr/bin/env python3
"""Time to recompute an 8K-token Llama-3-8B KV cache on this GPU (the prefill).

What it times: the forward pass that produces K and V for every layer of a
Llama-3-8B-shaped model (hidden 4096, 32 layers, 32 query heads, 8 KV heads,
head_dim 128, intermediate 14336, vocab 128256; random bf16 weights) over one
8192-token sequence: embedding, then per layer RMSNorm, Q/K/V projections,
RoPE (rotate-half, theta 500000), causal attention through
torch.nn.functional.scaled_dot_product_attention, the output projection, RMSNorm
and the SwiGLU MLP. The last layer stops once its K and V exist (its attention
and MLP do not change the cache); no logits. K and V of every layer are written
into one preallocated bf16 cache, 1 GiB, as a serving engine would.

Timing: CUDA events around the whole forward, 2 warm-ups, median of 5.

With --decode-log (bench/gpu/turboquant_bench's output), it also prints the
end-to-end table: decoding that same 1 GiB context from each codec against
recomputing it.

Usage: python3 bench/gpu/prefill_recompute.py [--decode-log bench.log] [--tokens 8192]
"""
import argparse
import re
import statistics
import sys

import torch
import torch.nn.functional as F

HIDDEN = 4096
LAYERS = 32
HEADS = 32
KV_HEADS = 8
HEAD_DIM = 128
INTERMEDIATE = 14336
VOCAB = 128256
ROPE_THETA = 500000.0
EPS = 1e-5


def rms_norm(x, weight):
    # As Hugging Face's LlamaRMSNorm: in float32, then back to bf16.
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + EPS)
    return weight * xf.to(x.dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Model:
    def __init__(self, tokens, device, seed=0):
        g = torch.Generator(device=device).manual_seed(seed)

        def w(*shape, std=0.02):
            return torch.randn(*shape, generator=g, device=device, dtype=torch.bfloat16) * std

        self.embed = w(VOCAB, HIDDEN)
        self.layers = []
        for _ in range(LAYERS):
            self.layers.append({
                "ln1": torch.ones(HIDDEN, device=device, dtype=torch.bfloat16),
                "wq": w(HEADS * HEAD_DIM, HIDDEN),
                "wk": w(KV_HEADS * HEAD_DIM, HIDDEN),
                "wv": w(KV_HEADS * HEAD_DIM, HIDDEN),
                "wo": w(HIDDEN, HEADS * HEAD_DIM),
                "ln2": torch.ones(HIDDEN, device=device, dtype=torch.bfloat16),
                "wg": w(INTERMEDIATE, HIDDEN),
                "wu": w(INTERMEDIATE, HIDDEN),
                "wd": w(HIDDEN, INTERMEDIATE),
            })
        inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, HEAD_DIM, 2, device=device, dtype=torch.float32) / HEAD_DIM))
        pos = torch.arange(tokens, device=device, dtype=torch.float32)
        freqs = torch.outer(pos, inv_freq)
        emb = torch.cat((freqs, freqs), dim=-1)
        self.cos = emb.cos().to(torch.bfloat16)[None, None]  # [1, 1, T, D]
        self.sin = emb.sin().to(torch.bfloat16)[None, None]
        # The KV cache the forward fills: [layers, 2, kv_heads, tokens, head_dim] bf16 (1 GiB at 8K).
        self.cache = torch.empty(LAYERS, 2, KV_HEADS, tokens, HEAD_DIM, device=device, dtype=torch.bfloat16)
        self.gqa = True

    def attention(self, q, k, v):
        if self.gqa:
            try:
                return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            except (RuntimeError, TypeError):
                self.gqa = False
        rep = HEADS // KV_HEADS
        return F.scaled_dot_product_attention(q, k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1),
                                              is_causal=True)

    def forward(self, ids):
        t = ids.shape[0]
        h = self.embed[ids][None]  # [1, T, H]
        for i, L in enumerate(self.layers):
            x = rms_norm(h, L["ln1"])
            k = (x @ L["wk"].T).view(1, t, KV_HEADS, HEAD_DIM).transpose(1, 2)
            v = (x @ L["wv"].T).view(1, t, KV_HEADS, HEAD_DIM).transpose(1, 2)
            k = k * self.cos + rotate_half(k) * self.sin
            self.cache[i, 0].copy_(k[0])
            self.cache[i, 1].copy_(v[0])
            if i == LAYERS - 1:
                break  # the last layer's attention and MLP do not change the cache
            q = (x @ L["wq"].T).view(1, t, HEADS, HEAD_DIM).transpose(1, 2)
            q = q * self.cos + rotate_half(q) * self.sin
            a = self.attention(q, k, v).transpose(1, 2).reshape(1, t, HEADS * HEAD_DIM)
            h = h + a @ L["wo"].T
            x = rms_norm(h, L["ln2"])
            h = h + (F.silu(x @ L["wg"].T) * (x @ L["wu"].T)) @ L["wd"].T
        return self.cache


def flops(tokens):
    per_layer_linear = 2 * tokens * HIDDEN * (2 * HEADS * HEAD_DIM + 2 * KV_HEADS * HEAD_DIM + 3 * INTERMEDIATE)
    attention = 2 * 2 * tokens * tokens * HEAD_DIM * HEADS / 2  # causal: half of QK^T and PV
    last = 2 * tokens * HIDDEN * 2 * KV_HEADS * HEAD_DIM
    return (LAYERS - 1) * (per_layer_linear + attention) + last


def time_prefill(tokens, warmup=2, repeats=5):
    dev = torch.device("cuda")
    model = Model(tokens, dev)
    ids = torch.randint(0, VOCAB, (tokens,), device=dev, generator=torch.Generator(device=dev).manual_seed(1))
    times = []
    with torch.inference_mode():
        for i in range(warmup + repeats):
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            cache = model.forward(ids)
            b.record()
            b.synchronize()
            if i >= warmup:
                times.append(a.elapsed_time(b))
    finite = bool(torch.isfinite(cache).all())
    return statistics.median(times), times, model.gqa, finite, cache.numel() * cache.element_size()


def read_e2e(path):
    rows = []
    with open(path) as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 5 and parts[0] == "E2E":
                rows.append((parts[1], float(parts[2]), float(parts[3]), float(parts[4])))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--decode-log", action="append",
                    help="a bench's output with E2E lines (turboquant_bench, lossless_bench); repeatable")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("prefill_recompute: no CUDA device", file=sys.stderr)
        return 1
    print(f"device: {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    ms, times, gqa, finite, cache_bytes = time_prefill(args.tokens)
    tf = flops(args.tokens) / (ms / 1e3) / 1e12
    print(f"prefill {args.tokens} tokens (Llama-3-8B shape, random bf16 weights): median {ms:.2f} ms "
          f"of {[round(t, 2) for t in times]}; {flops(args.tokens) / 1e12:.1f} TFLOP -> {tf:.0f} TFLOP/s; "
          f"sdpa {'enable_gqa' if gqa else 'repeat_interleave'}; cache {cache_bytes / 2**30:.2f} GiB, "
          f"finite={finite}")
    print(f"RECOMPUTE\t{ms:.4f}")
    if not args.decode_log:
        return 0
    rows = [row for log in args.decode_log for row in read_e2e(log)]
    if not rows:
        print(f"no E2E lines in {args.decode_log}")
        return 1
    print(f"\nEnd to end: an {args.tokens // 1024}K-token Llama-3-8B context (1 GiB of bf16 K+V) on this GPU")
    print(f"{'how the KV cache gets there':<34} {'ms':>9} {'1-call ms':>10} {'of D2D floor':>13} {'x faster than recompute':>24}")
    print(f"{'recompute: prefill (PyTorch)':<34} {ms:9.2f} {'':>10} {'':>13} {1.0:>23.0f}x")
    for name, bb_ms, one_ms, floor_ms in rows:
        m = re.match(r"e2e-\w+ b(\d) decode paged$", name)
        label = f"TurboQuant {m.group(1)}-bit -> vLLM paged" if m else name.replace("e2e-8k bf16 copy", "bf16 copy (cudaMemcpy)")
        label = label.replace("e2e-8k lossless decode paged", "lossless (rANS) -> vLLM paged")
        label = label.replace("e2e-8k seq decode paged", "seq (same-head) -> vLLM paged")
        floor = f"{100 * floor_ms / bb_ms:12.0f}%" if floor_ms > 0 else f"{'n/a':>13}"
        print(f"{label:<34} {bb_ms:9.3f} {one_ms:10.3f} {floor} {ms / one_ms:>23.0f}x")
    print("ms: back-to-back calls; 1-call: one call on an idle stream (host work included), used for the ratio")
    return 0


if __name__ == "__main__":
    sys.exit(main())
