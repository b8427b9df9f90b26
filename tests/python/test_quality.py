"""Tests of seqkv_quality on the real reference model and dev dumps in ../shared.

What they guard: the forward reproduces the model that wrote the dumps (self-check), an unchanged
cache measures exactly zero, damage to the cache is measured and grows with the damage, and inputs
that cannot be compared are refused with a message that names the problem. One dump (doc00) keeps
the file well under a minute on 2 cores.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

# Before torch loads (see seqkv_quality/__init__.py): spinning OpenMP threads stall a busy machine.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

from seqkv_quality import (KvDump, LlamaConfig, LlamaModel, QualityError, QualityEvaluator,
                           load_dump, read_safetensors, run_selfcheck, write_safetensors)
from seqkv_quality.selfcheck import (TOL_FULL_VS_CACHED_KL, TOL_KV_EXCESS_REL,
                                     TOL_LOGPROB_MAX_ABS)

torch.set_num_threads(2)

from conftest import DUMP, MODEL_DIR, PYTHON, REPO, SHARED  # noqa: E402,F401



@pytest.fixture(scope="module")
def evaluator(model: LlamaModel) -> QualityEvaluator:
    return QualityEvaluator(model, prefix=768)


@pytest.fixture(scope="module")
def dump(model: LlamaModel) -> KvDump:
    return load_dump(DUMP, model.cfg)


def _write_recon(path: Path, dump: KvDump, k: torch.Tensor | None = None,
                 v: torch.Tensor | None = None, tokens: torch.Tensor | None = None,
                 dtype: torch.dtype = torch.float32) -> Path:
    """Writes a reconstruction file the way a codec would: tokens, k, v only."""
    write_safetensors(path, {
        "tokens": (dump.tokens if tokens is None else tokens).to(torch.int32),
        "k": (dump.k if k is None else k).to(dtype),
        "v": (dump.v if v is None else v).to(dtype),
    })
    return path


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    return subprocess.run([PYTHON, "-m", "seqkv_quality", *args, "--threads", "2"],
                          capture_output=True, text=True, env=env, timeout=120)


# ------------------------------------------------------------------------------------ self-check

def test_selfcheck_passes_within_stated_tolerances(evaluator: QualityEvaluator,
                                                   dump: KvDump) -> None:
    r = run_selfcheck(evaluator, dump)
    assert r["passed"], json.dumps(r, indent=1)
    a, b, c, d = (r["full_vs_cached"], r["kv_vs_dump"], r["logprob_vs_dump"], r["orig_vs_orig"])
    assert a["kl_nats"] <= TOL_FULL_VS_CACHED_KL and a["top1_agreement"] >= 0.99
    for e in (b["k"], b["v"]):
        assert e["excess_rel"] <= TOL_KV_EXCESS_REL
        assert e["exact_fraction"] >= 0.99
        assert e["rel_error"] <= 2.0 ** -8  # bf16 rounding alone
    assert c["max_abs_diff_nats"] <= TOL_LOGPROB_MAX_ABS
    assert abs(c["bits_per_token_model"] - c["bits_per_token_dump"]) < 1e-4
    assert (d["kl_nats"], d["top1_agreement"], d["delta_ce_bits"]) == (0.0, 1.0, 0.0)


# ------------------------------------------------------------------------------------ metrics

def test_orig_vs_orig_is_exactly_zero(evaluator: QualityEvaluator) -> None:
    m = evaluator.compare_files(DUMP, DUMP)
    assert m.kl_nats == 0.0 and m.kl_max_nats == 0.0
    assert m.top1_agreement == 1.0
    assert m.delta_ce_bits == 0.0
    assert (m.prefix, m.tokens, m.positions, m.ce_positions) == (768, 1024, 256, 255)


def test_bf16_copy_in_another_file_is_exactly_zero(evaluator: QualityEvaluator, dump: KvDump,
                                                  tmp_path: Path) -> None:
    recon = _write_recon(tmp_path / "copy.safetensors", dump, dtype=torch.bfloat16)
    m = evaluator.compare_files(DUMP, recon)
    assert (m.kl_nats, m.top1_agreement, m.delta_ce_bits) == (0.0, 1.0, 0.0)


def test_kl_grows_with_noise_on_v_of_layer_3(evaluator: QualityEvaluator, dump: KvDump,
                                             tmp_path: Path) -> None:
    # One fixed noise direction, scaled: the damage differs only in size.
    noise = torch.randn(dump.v[3].shape, generator=torch.Generator().manual_seed(3))
    rms = dump.v[3].pow(2).mean().sqrt()
    kls, agreements = [], []
    for i, scale in enumerate((0.01, 0.1, 0.3, 1.0)):
        v = dump.v.clone()
        v[3] += scale * rms * noise
        m = evaluator.compare_files(DUMP, _write_recon(tmp_path / f"noise{i}.safetensors", dump,
                                                       v=v))
        kls.append(m.kl_nats)
        agreements.append(m.top1_agreement)
    assert kls[0] > 0.0
    assert all(a < b for a, b in zip(kls, kls[1:])), kls
    assert kls[-1] > 1e-3 and agreements[-1] < 1.0, (kls, agreements)


def test_noise_in_positions_after_the_prefix_is_ignored(evaluator: QualityEvaluator,
                                                        dump: KvDump, tmp_path: Path) -> None:
    # Only the first `prefix` positions are the cache; the rest is recomputed by the model.
    k = dump.k.clone()
    k[:, :, 768:] += 1.0
    m = evaluator.compare_files(DUMP, _write_recon(tmp_path / "tail.safetensors", dump, k=k))
    assert (m.kl_nats, m.top1_agreement) == (0.0, 1.0)


# ------------------------------------------------------------------------------------ refusals

def test_mismatched_tokens_are_refused(evaluator: QualityEvaluator, dump: KvDump,
                                       tmp_path: Path) -> None:
    tokens = dump.tokens.clone()
    tokens[17] = (tokens[17] + 1) % 8192
    recon = _write_recon(tmp_path / "other_tokens.safetensors", dump, tokens=tokens)
    with pytest.raises(QualityError, match=r"tokens differ .* first at 17"):
        evaluator.compare_files(DUMP, recon)


def test_mismatched_shape_is_refused(evaluator: QualityEvaluator, dump: KvDump,
                                     tmp_path: Path) -> None:
    recon = _write_recon(tmp_path / "five_layers.safetensors", dump, k=dump.k[:5], v=dump.v[:5])
    with pytest.raises(QualityError, match=r"\[layers, kv_heads, head_dim\] = \[5, 2, 64\]"):
        evaluator.compare_files(DUMP, recon)
    short = tmp_path / "short.safetensors"
    write_safetensors(short, {"tokens": dump.tokens[:512].to(torch.int32),
                              "k": dump.k[:, :, :512].to(torch.bfloat16),
                              "v": dump.v[:, :, :512].to(torch.bfloat16)})
    with pytest.raises(QualityError, match="512 tokens but"):
        evaluator.compare_files(DUMP, short)


def test_broken_files_are_refused(dump: KvDump, model: LlamaModel, tmp_path: Path) -> None:
    good = _write_recon(tmp_path / "good.safetensors", dump, dtype=torch.bfloat16)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-1000])
    with pytest.raises(QualityError, match="truncated"):
        load_dump(truncated, model.cfg)
    v = dump.v.clone()
    v[0, 0, 0, 0] = float("nan")
    with pytest.raises(QualityError, match="non-finite"):
        load_dump(_write_recon(tmp_path / "nan.safetensors", dump, v=v), model.cfg)
    with pytest.raises(QualityError, match="cannot read"):
        load_dump(tmp_path / "missing.safetensors", model.cfg)


def test_prefix_out_of_range_is_refused(model: LlamaModel) -> None:
    with pytest.raises(QualityError, match=r"prefix 1024 must be in \[1, 1023\]"):
        QualityEvaluator(model, prefix=1024).compare_files(DUMP, DUMP)


# ------------------------------------------------------------------------------------ CLI

def test_cli_mismatch_exits_2_with_message(dump: KvDump, tmp_path: Path) -> None:
    tokens = dump.tokens.clone()
    tokens[900] = (tokens[900] + 1) % 8192
    recon = _write_recon(tmp_path / "r.safetensors", dump, tokens=tokens)
    p = _run_cli("compare", "--model", str(MODEL_DIR), "--orig", str(DUMP), "--recon",
                 str(recon), "--json")
    assert p.returncode == 2
    assert p.stdout == ""
    assert "tokens differ" in p.stderr and "first at 900" in p.stderr


def test_cli_manifest_reports_each_pair_and_the_mean(dump: KvDump, tmp_path: Path) -> None:
    v = dump.v.clone()
    v[3] += 0.3 * dump.v[3].pow(2).mean().sqrt() * torch.randn(
        v[3].shape, generator=torch.Generator().manual_seed(1))
    _write_recon(tmp_path / "noisy.safetensors", dump, v=v)
    _write_recon(tmp_path / "bad.safetensors", dump, k=dump.k[:, :1], v=dump.v[:, :1])
    manifest = tmp_path / "pairs.json"
    manifest.write_text(json.dumps([{"orig": str(DUMP), "recon": str(DUMP)},
                                    {"orig": str(DUMP), "recon": "noisy.safetensors"},
                                    {"orig": str(DUMP), "recon": "bad.safetensors"}]))
    p = _run_cli("compare", "--model", str(MODEL_DIR), "--manifest", str(manifest), "--json")
    assert p.returncode == 2, p.stderr  # one pair failed; the others are still reported
    out = json.loads(p.stdout)
    same, noisy, bad = out["pairs"]
    assert (same["kl_nats"], same["top1_agreement"], same["delta_ce_bits"]) == (0.0, 1.0, 0.0)
    assert noisy["kl_nats"] > 0 and noisy["recon"].endswith("noisy.safetensors")
    assert "kv_heads" in bad["error"] and "bad.safetensors" in p.stderr
    mean = out["mean"]
    assert mean["pairs"] == 2 and out["failed"] == 1
    assert mean["kl_nats"] == pytest.approx(noisy["kl_nats"] / 2)
    assert mean["positions"] == 512
    for key in ("kl_nats", "top1_agreement", "delta_ce_bits", "positions", "prefix", "orig",
                "recon", "ce_positions", "seconds"):
        assert key in noisy
    assert out["prefix"] == 768 and out["kv_round"] == "none"


# ------------------------------------------------------------------------------------ units

def test_safetensors_round_trip(tmp_path: Path) -> None:
    tensors = {
        "bf16": torch.tensor([[1.5, -2.25], [3.0, 1e-3]], dtype=torch.bfloat16),
        "f16": torch.tensor([0.5, 65504.0], dtype=torch.float16),
        "f32": torch.arange(5, dtype=torch.float32),
        "i32": torch.tensor([7, -8], dtype=torch.int32),
        "u8": torch.tensor([255], dtype=torch.uint8),
        "empty": torch.zeros(0, 3),
    }
    path = tmp_path / "t.safetensors"
    write_safetensors(path, tensors, {"note": "x"})
    back, meta = read_safetensors(path)
    assert meta == {"note": "x"} and list(back) == list(tensors)
    for name, t in tensors.items():
        assert back[name].dtype == t.dtype and torch.equal(back[name], t), name


def _tiny_model(**overrides: object) -> LlamaModel:
    """A random 2-layer model with GQA and an untied head, to test the forward's own consistency."""
    fields = dict(vocab_size=50, hidden_size=32, intermediate_size=48, num_layers=2, num_heads=4,
                  num_kv_heads=2, head_dim=8, rms_norm_eps=1e-5, rope_theta=10000.0,
                  tie_word_embeddings=False, max_position_embeddings=64, rope_scaling=None)
    fields.update(overrides)
    cfg = LlamaConfig(**fields)  # type: ignore[arg-type]
    g = torch.Generator().manual_seed(0)
    h, d, f = cfg.hidden_size, cfg.head_dim, cfg.intermediate_size
    shapes = {"embed_tokens.weight": (cfg.vocab_size, h), "norm.weight": (h,),
              "lm_head.weight": (cfg.vocab_size, h)}
    for i in range(cfg.num_layers):
        p = f"layers.{i}."
        shapes |= {p + "input_layernorm.weight": (h,), p + "post_attention_layernorm.weight": (h,),
                   p + "self_attn.q_proj.weight": (cfg.num_heads * d, h),
                   p + "self_attn.k_proj.weight": (cfg.num_kv_heads * d, h),
                   p + "self_attn.v_proj.weight": (cfg.num_kv_heads * d, h),
                   p + "self_attn.o_proj.weight": (h, cfg.num_heads * d),
                   p + "mlp.gate_proj.weight": (f, h), p + "mlp.up_proj.weight": (f, h),
                   p + "mlp.down_proj.weight": (h, f)}
    weights = {k: torch.randn(s, generator=g) * (0.3 if len(s) == 2 else 1.0)
               for k, s in shapes.items()}
    return LlamaModel(cfg, weights)


@pytest.mark.parametrize("rope_scaling", [None, {"rope_type": "llama3", "factor": 8.0,
                                                 "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                                 "original_max_position_embeddings": 16}])
def test_cached_forward_equals_full_forward(rope_scaling: dict | None) -> None:
    model = _tiny_model(rope_scaling=rope_scaling)
    tokens = torch.randint(0, 50, (40,), generator=torch.Generator().manual_seed(1))
    full = model.forward(tokens, return_kv=True)
    for s in (1, 17, 39):
        part = model.forward(tokens[s:], full.k[:, :, :s], full.v[:, :, :s])
        torch.testing.assert_close(part.logits, full.logits[s:], rtol=1e-5, atol=1e-5)
    # Small query chunks and the plain torch matmul path compute the same thing.
    chunked = model.forward(tokens, query_chunk=7)
    torch.testing.assert_close(chunked.logits, full.logits, rtol=1e-5, atol=1e-5)
    plain = LlamaModel(model.cfg, model.w, matmul="torch").forward(tokens)
    torch.testing.assert_close(plain.logits, full.logits, rtol=1e-4, atol=1e-4)
