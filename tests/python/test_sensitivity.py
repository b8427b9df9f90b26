"""Tests of seqkv_quality.sensitivity (`python3 -m seqkv_quality sensitivity`).

What they guard: one finite, positive sensitivity per (layer, K/V, kv_head); the same numbers for
the same seed, and for a layer whether or not the other layers are measured; the JSON format that
bench tools read; clear refusals. The API tests use doc00 cut to 256 tokens with 128 cached, so that
the 25 cached runs per measurement take a few seconds on one thread.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads

import pytest  # noqa: E402
import torch  # noqa: E402

from seqkv_quality import (KvDump, LlamaModel, QualityError, QualityEvaluator,  # noqa: E402
                           load_dump, write_safetensors)
from seqkv_quality.sensitivity import SENSITIVITY_FORMAT, measure_sensitivity  # noqa: E402

torch.set_num_threads(1)

from conftest import DUMP, MODEL_DIR, PYTHON, REPO, SHARED  # noqa: E402,F401
KEYS = ["format", "model", "layers", "kv_heads", "head_dim", "key_domain", "cache_tokens",
        "rel_noise", "seed", "files", "sensitivity", "kl_mean", "seconds"]



@pytest.fixture(scope="module")
def short_dump(model: LlamaModel) -> KvDump:
    d = load_dump(DUMP, model.cfg)
    return KvDump(d.path, d.tokens[:256], d.k[:, :, :256].clone(), d.v[:, :, :256].clone(),
                  d.kv_dtype, None, d.metadata, d.first_position)


@pytest.fixture(scope="module")
def evaluator(model: LlamaModel) -> QualityEvaluator:
    return QualityEvaluator(model, prefix=128)


@pytest.fixture(scope="module")
def full_run(evaluator: QualityEvaluator, short_dump: KvDump):
    return measure_sensitivity(evaluator, [short_dump], rel_noise=0.05, seed=7)


def test_one_finite_positive_value_per_group(full_run, model: LlamaModel) -> None:
    out = full_run.to_dict("tinyllama-12m")
    assert list(out) == KEYS
    cfg = model.cfg
    assert (out["format"], out["layers"], out["kv_heads"], out["head_dim"], out["cache_tokens"],
            out["key_domain"]) == (SENSITIVITY_FORMAT, cfg.num_layers, cfg.num_kv_heads,
                                   cfg.head_dim, 128, "pre_rope")
    for name in ("sensitivity", "kl_mean"):
        x = out[name]
        assert len(x) == cfg.num_layers
        for layer in x:
            assert len(layer) == 2 and all(len(kv) == cfg.num_kv_heads for kv in layer)
            for kv in layer:
                assert all(v is not None and math.isfinite(v) and v > 0 for v in kv), (name, x)
    json.dumps(out, allow_nan=False)


def test_same_seed_same_numbers(full_run, evaluator: QualityEvaluator,
                                short_dump: KvDump) -> None:
    again = measure_sensitivity(evaluator, [short_dump], rel_noise=0.05, seed=7)
    assert torch.equal(again.sensitivity, full_run.sensitivity)
    assert torch.equal(again.kl_mean, full_run.kl_mean)
    other = measure_sensitivity(evaluator, [short_dump], rel_noise=0.05, seed=8, layers=[2])
    assert not torch.equal(other.sensitivity[2], full_run.sensitivity[2])
    # Another noise draw measures the same quantity: same order of magnitude.
    ratio = other.sensitivity[2] / full_run.sensitivity[2]
    assert bool(((ratio > 0.2) & (ratio < 5)).all()), ratio


def test_layer_subset_matches_the_full_run(full_run, evaluator: QualityEvaluator,
                                           short_dump: KvDump) -> None:
    part = measure_sensitivity(evaluator, [short_dump], rel_noise=0.05, seed=7, layers=[4, 1])
    for layer in range(full_run.sensitivity.shape[0]):
        if layer in (1, 4):
            assert torch.equal(part.sensitivity[layer], full_run.sensitivity[layer])
        else:
            assert bool(part.sensitivity[layer].isnan().all())
    assert part.to_dict("m")["sensitivity"][0] == [[None, None], [None, None]]


def test_bad_inputs_are_refused(evaluator: QualityEvaluator, short_dump: KvDump) -> None:
    with pytest.raises(QualityError, match="prefix 128 must be in"):
        measure_sensitivity(evaluator, [KvDump(short_dump.path, short_dump.tokens[:100],
                                               short_dump.k[:, :, :100], short_dump.v[:, :, :100],
                                               "BF16", None)])
    with pytest.raises(QualityError, match="layers"):
        measure_sensitivity(evaluator, [short_dump], layers=[6])
    with pytest.raises(QualityError, match="rel_noise"):
        measure_sensitivity(evaluator, [short_dump], rel_noise=0.0)


# ------------------------------------------------------------------------------------ CLI

def _run_cli(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    return subprocess.run([PYTHON, "-m", "seqkv_quality", "sensitivity", "--model",
                           str(MODEL_DIR), "--threads", "1", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_cli_writes_the_json_file(tmp_path: Path) -> None:
    # 1008 cached positions leave 16 queries: 25 short runs.
    out = tmp_path / "sub" / "sens.json"
    p = _run_cli("--prefix", "1008", "--out", str(out), "--json", str(DUMP))
    assert p.returncode == 0, p.stderr
    written = json.loads(out.read_text())
    assert json.loads(p.stdout) == written
    assert list(written) == KEYS
    assert (written["model"], written["files"], written["cache_tokens"], written["seed"],
            written["rel_noise"]) == ("tinyllama-12m", ["doc00.safetensors"], 1008, 7, 0.05)
    assert p.stderr.count("layer ") == 6  # one progress line per file and layer


def test_cli_refuses_missing_and_mismatched_files(tmp_path: Path, short_dump: KvDump) -> None:
    out = tmp_path / "sens.json"
    p = _run_cli("--out", str(out), str(DUMP), str(tmp_path / "missing.safetensors"))
    assert p.returncode == 2 and "missing.safetensors" in p.stderr and not out.exists()
    five = tmp_path / "five.safetensors"
    write_safetensors(five, {"tokens": short_dump.tokens.to(torch.int32),
                             "k": short_dump.k[:5].to(torch.bfloat16),
                             "v": short_dump.v[:5].to(torch.bfloat16)})
    p = _run_cli("--prefix", "128", "--out", str(out), str(five))
    assert p.returncode == 2 and "[5, 2, 64]" in p.stderr and not out.exists()
