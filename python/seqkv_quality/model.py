"""A float32 Llama forward pass in plain PyTorch, able to continue from an external KV cache.

Why not transformers: the tool must run where only Debian's python3-torch is installed, and it must
accept a cache that a codec reconstructed (post-RoPE K and V per [layer, kv_head, token, head_dim]),
which is simplest with a forward written for exactly that layout.

The forward follows Hugging Face's LlamaForCausalLM: token embedding; per layer RMSNorm -> attention
with rotate-half RoPE and grouped-query heads -> residual, RMSNorm -> SwiGLU MLP -> residual; final
RMSNorm; output head (tied to the embedding when the checkpoint says so). Weights are converted to
float32 once at load time; all arithmetic is float32.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import QualityError
from .safetensors import read_safetensors

# How the K/V of tokens the model computes itself are stored before attention reads them. The
# default, "none" (float32), is how the dev dumps were made: with it the model reproduces the dumps'
# k/v bit-exactly after bf16 rounding (99.9% of elements; the rest differ by one bf16 ulp) and their
# `logprob` within 6e-5 nats, whereas rounding to bf16 inside attention (as an engine with a bf16
# cache does) leaves only 61-85% of layers 1-5's k/v exact and moves `logprob` by up to 0.08 nats.
# See python/README.md.
DEFAULT_KV_ROUND = "none"
KV_ROUNDINGS: dict[str, torch.dtype | None] = {"bf16": torch.bfloat16, "f16": torch.float16,
                                               "none": None}


@dataclass(frozen=True)
class LlamaConfig:
    """The subset of a Hugging Face config.json that the Llama forward needs."""

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    tie_word_embeddings: bool
    max_position_embeddings: int
    rope_scaling: dict | None

    @classmethod
    def from_json(cls, path: Path) -> "LlamaConfig":
        try:
            c = json.loads(path.read_text())
        except OSError as e:
            raise QualityError(f"{path}: cannot read: {e.strerror or e}") from e
        except json.JSONDecodeError as e:
            raise QualityError(f"{path}: not valid JSON: {e}") from e
        model_type = c.get("model_type", "llama")
        if model_type != "llama":
            raise QualityError(f"{path}: model_type {model_type!r} is not a Llama model")
        act = c.get("hidden_act", "silu")
        if act != "silu":
            raise QualityError(f"{path}: hidden_act {act!r} not supported (Llama uses silu)")
        try:
            heads = int(c["num_attention_heads"])
            hidden = int(c["hidden_size"])
            cfg = cls(
                vocab_size=int(c["vocab_size"]),
                hidden_size=hidden,
                intermediate_size=int(c["intermediate_size"]),
                num_layers=int(c["num_hidden_layers"]),
                num_heads=heads,
                num_kv_heads=int(c.get("num_key_value_heads") or heads),
                head_dim=int(c.get("head_dim") or hidden // heads),
                # Defaults are those of transformers' LlamaConfig.
                rms_norm_eps=float(c.get("rms_norm_eps", 1e-6)),
                rope_theta=float(c.get("rope_theta", 10000.0)),
                tie_word_embeddings=bool(c.get("tie_word_embeddings", False)),
                max_position_embeddings=int(c.get("max_position_embeddings", 2048)),
                rope_scaling=c.get("rope_scaling") or None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise QualityError(f"{path}: missing or bad field: {e}") from e
        if cfg.num_heads % cfg.num_kv_heads:
            raise QualityError(f"{path}: {cfg.num_heads} heads not a multiple of "
                               f"{cfg.num_kv_heads} KV heads")
        if cfg.head_dim % 2:
            raise QualityError(f"{path}: head_dim {cfg.head_dim} is odd; RoPE needs pairs")
        return cfg


@dataclass
class ForwardResult:
    """Output of LlamaModel.forward for N new tokens after a cache of S positions.

    logits: [N, vocab] float32, row i predicts the token after position S+i.
    k, v:   [layers, kv_heads, N, head_dim], the new tokens' K (after RoPE) and V exactly as
            attention used them (i.e. after the optional rounding); None unless return_kv was set.
    """

    logits: torch.Tensor
    k: torch.Tensor | None = None
    v: torch.Tensor | None = None


def _rope_inv_freq(cfg: LlamaConfig) -> torch.Tensor:
    """Inverse frequencies of the rotate-half RoPE, with the rope_scaling variants Llama uses."""
    d = cfg.head_dim
    inv_freq = 1.0 / (cfg.rope_theta ** (torch.arange(0, d, 2, dtype=torch.int64).float() / d))
    rs = cfg.rope_scaling
    if rs is None:
        return inv_freq
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "default":
        return inv_freq
    if kind == "linear":  # Positions divided by factor, i.e. every frequency divided by it.
        return inv_freq / float(rs["factor"])
    if kind == "llama3":
        # Llama 3.1: long wavelengths slowed by `factor`, short ones kept, a smooth ramp between.
        factor = float(rs["factor"])
        low, high = float(rs["low_freq_factor"]), float(rs["high_freq_factor"])
        old_ctx = float(rs["original_max_position_embeddings"])
        wavelen = 2 * math.pi / inv_freq
        smooth = ((old_ctx / wavelen - low) / (high - low)).clamp(0.0, 1.0)
        return (1 - smooth) * inv_freq / factor + smooth * inv_freq
    raise QualityError(f"rope_scaling type {kind!r} is not supported (plain, linear, llama3 are)")


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """cat(-x2, x1) over the last dimension: the rotate-half RoPE's partner term."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


MATMUL_BACKENDS = ("auto", "onednn", "torch")


def _use_onednn(backend: str, device: torch.device) -> bool:
    """Picks the float32 matrix-multiply path once, at load time.

    Debian's python3-torch links the netlib reference BLAS (BLAS_INFO=generic), which runs the
    1024 x 384 x 8192 output head in ~3 s on this machine's cores; the oneDNN library that the same
    build ships computes it in ~0.3 s with the same float32 arithmetic. "auto" takes oneDNN on CPU
    when the build has it, and torch's own matmul elsewhere (CUDA, builds without oneDNN).
    """
    if backend not in MATMUL_BACKENDS:
        raise QualityError(f"matmul backend {backend!r} not one of {MATMUL_BACKENDS}")
    available = device.type == "cpu" and torch.backends.mkldnn.is_available()
    if backend == "onednn" and not available:
        raise QualityError("matmul backend 'onednn' needs a CPU device and a torch with oneDNN")
    return available and backend != "torch"


class LlamaModel:
    """A loaded Llama checkpoint. Stateless between calls; not safe to call from several threads."""

    def __init__(self, cfg: LlamaConfig, weights: dict[str, torch.Tensor], device: str = "cpu",
                 matmul: str = "auto"):
        """weights: float32 tensors under Hugging Face names without the leading "model.".

        matmul: "auto", "onednn" or "torch"; see _use_onednn for why this matters.
        """
        self.cfg = cfg
        self.device = torch.device(device)
        self.w = {k: t.to(self.device) for k, t in weights.items()}
        self.inv_freq = _rope_inv_freq(cfg).to(self.device)
        self.onednn = _use_onednn(matmul, self.device)
        # oneDNN's own copies of the projection matrices, converted once instead of per call.
        self.w_onednn = ({k: t.to_mkldnn() for k, t in self.w.items()
                          if k.endswith(".weight") and t.dim() == 2} if self.onednn else {})

    # ----------------------------------------------------------------------------------- loading

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "cpu", matmul: str = "auto") -> "LlamaModel":
        """Loads config.json and the shards in model.safetensors.index.json or model.safetensors."""
        model_dir = Path(model_dir)
        if not model_dir.is_dir():
            raise QualityError(f"{model_dir}: model directory not found")
        cfg = LlamaConfig.from_json(model_dir / "config.json")
        index = model_dir / "model.safetensors.index.json"
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (OSError, json.JSONDecodeError, KeyError, TypeError) as e:
                raise QualityError(f"{index}: cannot read its weight_map: {e}") from e
            shards = sorted(set(weight_map.values()))
        elif (model_dir / "model.safetensors").exists():
            shards = ["model.safetensors"]
        else:
            raise QualityError(f"{model_dir}: neither model.safetensors.index.json nor "
                               "model.safetensors found")
        raw: dict[str, torch.Tensor] = {}
        for shard in shards:
            tensors, _ = read_safetensors(model_dir / shard)
            for name, t in tensors.items():
                # LlamaForCausalLM prefixes the body with "model."; LlamaModel checkpoints do not.
                key = name[len("model."):] if name.startswith("model.") else name
                raw[key] = t.to(torch.float32)
        return cls(cfg, cls._check_weights(cfg, raw, model_dir), device, matmul)

    @staticmethod
    def _check_weights(cfg: LlamaConfig, raw: dict[str, torch.Tensor],
                       model_dir: Path) -> dict[str, torch.Tensor]:
        """Checks every tensor the forward reads exists with the shape the config implies."""
        h, d, f = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size
        expected = {"embed_tokens.weight": (cfg.vocab_size, h), "norm.weight": (h,)}
        for i in range(cfg.num_layers):
            p = f"layers.{i}."
            expected |= {
                p + "input_layernorm.weight": (h,),
                p + "post_attention_layernorm.weight": (h,),
                p + "self_attn.q_proj.weight": (cfg.num_heads * d, h),
                p + "self_attn.k_proj.weight": (cfg.num_kv_heads * d, h),
                p + "self_attn.v_proj.weight": (cfg.num_kv_heads * d, h),
                p + "self_attn.o_proj.weight": (h, cfg.num_heads * d),
                p + "mlp.gate_proj.weight": (f, h),
                p + "mlp.up_proj.weight": (f, h),
                p + "mlp.down_proj.weight": (h, f),
            }
        if "lm_head.weight" in raw and not cfg.tie_word_embeddings:
            expected["lm_head.weight"] = (cfg.vocab_size, h)
        elif not cfg.tie_word_embeddings:
            raise QualityError(f"{model_dir}: no lm_head.weight and tie_word_embeddings is false")
        for name, shape in expected.items():
            if name not in raw:
                raise QualityError(f"{model_dir}: checkpoint lacks tensor {name!r}")
            if tuple(raw[name].shape) != shape:
                raise QualityError(f"{model_dir}: tensor {name!r} has shape "
                                   f"{tuple(raw[name].shape)}, config implies {shape}")
        weights = {k: raw[k] for k in expected}
        # Optional biases (attention_bias / mlp_bias checkpoints) are used when present.
        weights |= {k: t for k, t in raw.items() if k.endswith(".bias")}
        weights["lm_head.weight"] = weights.get("lm_head.weight", weights["embed_tokens.weight"])
        return weights

    # ----------------------------------------------------------------------------------- forward

    def _mm_nt(self, a: torch.Tensor, b: torch.Tensor, b_onednn: torch.Tensor | None = None
               ) -> torch.Tensor:
        """a @ b.T for 2-D float32 a [m, k], b [n, k]; b_onednn: b already converted for oneDNN."""
        if not self.onednn:
            return a @ b.T
        if b_onednn is None:
            b_onednn = b.contiguous().to_mkldnn()
        return torch._C._nn.mkldnn_linear(a.contiguous().to_mkldnn(), b_onednn, None).to_dense()

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        w = name + ".weight"
        y = self._mm_nt(x, self.w[w], self.w_onednn.get(w))
        bias = self.w.get(name + ".bias")
        return y if bias is None else y + bias

    def _rms_norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        var = x.pow(2).mean(-1, keepdim=True)
        return self.w[name + ".weight"] * (x * torch.rsqrt(var + self.cfg.rms_norm_eps))

    def _rope(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """x: [heads, N, head_dim]; rotate-half convention, pairs (i, i + head_dim/2)."""
        freqs = positions.to(torch.float32)[:, None] * self.inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)
        return x * emb.cos() + rotate_half(x) * emb.sin()

    @torch.no_grad()
    def forward(self, tokens: torch.Tensor, past_k: torch.Tensor | None = None,
                past_v: torch.Tensor | None = None, kv_round: str = DEFAULT_KV_ROUND,
                return_kv: bool = False, first_position: int = 0,
                query_chunk: int = 1024) -> ForwardResult:
        """Runs tokens at cache slots S..S+N-1 after a cache of S slots (S = 0 without a cache).

        tokens: [N] integer ids. past_k, past_v: [layers, kv_heads, S, head_dim] (K after RoPE), any
        float dtype, used at their own values (converted to float32, never re-rounded). kv_round:
        how the new tokens' K/V are stored before attention reads them (a key of KV_ROUNDINGS).
        Attention is causal over cache + new tokens. first_position: RoPE position of cache slot 0
        (a cache that starts mid-document). query_chunk bounds the score matrix for long inputs.
        """
        cfg, dev = self.cfg, self.device
        if kv_round not in KV_ROUNDINGS:
            raise QualityError(f"kv_round {kv_round!r} not one of {sorted(KV_ROUNDINGS)}")
        round_to = KV_ROUNDINGS[kv_round]
        tokens = tokens.to(dev, torch.int64).reshape(-1)
        n = tokens.numel()
        s = 0 if past_k is None else past_k.shape[2]
        if past_k is not None:
            expected = (cfg.num_layers, cfg.num_kv_heads, s, cfg.head_dim)
            if past_v is None or tuple(past_k.shape) != expected or tuple(past_v.shape) != expected:
                raise QualityError(f"cache shapes k {tuple(past_k.shape)}, v "
                                   f"{None if past_v is None else tuple(past_v.shape)}; "
                                   f"the model needs {expected}")
        if n and (int(tokens.min()) < 0 or int(tokens.max()) >= cfg.vocab_size):
            raise QualityError(f"token ids outside the vocabulary [0, {cfg.vocab_size})")
        slots = torch.arange(s, s + n, device=dev)
        positions = slots + first_position
        heads, kvh, d = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
        rep = heads // kvh
        scale = 1.0 / math.sqrt(d)
        # Masks depend only on positions: built once per call, shared by every layer and head.
        key_pos = torch.arange(s + n, device=dev)
        chunks = [(a, min(n, a + query_chunk),
                   key_pos[None, :] > slots[a:a + query_chunk, None])
                  for a in range(0, n, query_chunk)]
        x = self.w["embed_tokens.weight"][tokens]
        ks, vs = [], []
        for layer in range(cfg.num_layers):
            p = f"layers.{layer}."
            hn = self._rms_norm(x, p + "input_layernorm")
            q = self._linear(hn, p + "self_attn.q_proj").view(n, heads, d).transpose(0, 1)
            k = self._linear(hn, p + "self_attn.k_proj").view(n, kvh, d).transpose(0, 1)
            v = self._linear(hn, p + "self_attn.v_proj").view(n, kvh, d).transpose(0, 1)
            q, k = self._rope(q, positions), self._rope(k, positions)
            if round_to is not None:
                k, v = k.to(round_to).float(), v.to(round_to).float()
            if return_kv:
                ks.append(k)
                vs.append(v)
            if past_k is not None:
                k = torch.cat((past_k[layer].to(dev, torch.float32), k), dim=1)
                v = torch.cat((past_v[layer].to(dev, torch.float32), v), dim=1)
            # Scaling q rather than the scores: N*d multiplies instead of N*(S+N); exact when d is a
            # power of four (1/sqrt(d) is then a power of two), within an ulp otherwise.
            attn = self._attention((q * scale).reshape(kvh, rep, n, d), k, v, chunks)
            attn = attn.reshape(heads, n, d).transpose(0, 1).reshape(n, heads * d)
            x = x + self._linear(attn, p + "self_attn.o_proj")
            hn = self._rms_norm(x, p + "post_attention_layernorm")
            gate = torch.nn.functional.silu(self._linear(hn, p + "mlp.gate_proj"))
            x = x + self._linear(gate * self._linear(hn, p + "mlp.up_proj"), p + "mlp.down_proj")
        # Results go back to the CPU, where dumps and metrics live, whatever the device.
        logits = self._linear(self._rms_norm(x, "norm"), "lm_head").cpu()
        if not return_kv:
            return ForwardResult(logits)
        return ForwardResult(logits, torch.stack(ks).cpu(), torch.stack(vs).cpu())

    def _attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                   chunks: list[tuple[int, int, torch.Tensor]]) -> torch.Tensor:
        """Causal grouped-query attention.

        q: [kv_heads, rep, N, d], already multiplied by 1/sqrt(d); k, v: [kv_heads, S+N, d].
        chunks: (first, end, mask) per block of queries, mask [end-first, S+N] True where a key lies
        in the query's future. Query head g*rep + r reads KV head g, as Hugging Face's repeat_kv
        arranges them. Returns [kv_heads, rep, N, d]. Written as 2-D products per KV head so that
        they run on the chosen matmul path.
        """
        kvh, rep, n, d = q.shape
        total = k.shape[1]
        out = torch.empty_like(q)
        for g in range(kvh):
            k_g = k[g].contiguous()
            vt_g = v[g].T.contiguous()  # [d, total]: P @ v == P @ (v.T).T
            k_g1 = k_g.to_mkldnn() if self.onednn else None
            vt_g1 = vt_g.to_mkldnn() if self.onednn else None
            for a, b, mask in chunks:
                scores = self._mm_nt(q[g, :, a:b].reshape(rep * (b - a), d), k_g, k_g1)
                scores = scores.view(rep, b - a, total).masked_fill_(mask, float("-inf"))
                probs = torch.softmax(scores, dim=-1)
                ctx = self._mm_nt(probs.view(rep * (b - a), total), vt_g, vt_g1)
                out[g, :, a:b] = ctx.view(rep, b - a, d)
        return out
