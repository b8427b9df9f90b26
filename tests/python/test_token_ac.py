"""Tests of seqkv_quality.token_ac (`python3 -m seqkv_quality tokenbits`).

What they guard: the arithmetic coder is exact on any tables; the decoder's one assumption (a
fixed-shape forward's row j depends only on inputs <= j, bit for bit) holds for this forward; a real
dump's first 256 tokens round-trip exactly, decoded from the bytes alone, within 3% of the model's
bound; bad inputs are refused.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from seqkv_quality import LlamaModel, QualityError, load_dump  # noqa: E402
from seqkv_quality.token_ac import (ArithmeticDecoder, ArithmeticEncoder,  # noqa: E402
                                    TokenCoder, quantize_row, round_trip, uniform_table)

torch.set_num_threads(1)

from conftest import DUMP, MODEL_DIR, PYTHON, REPO, SHARED  # noqa: E402,F401



@pytest.fixture(scope="module")
def tokens(model: LlamaModel) -> np.ndarray:
    return load_dump(DUMP, model.cfg).tokens[:256].numpy()


def test_coder_round_trips_any_tables() -> None:
    rng = np.random.default_rng(1)
    for trial in range(12):
        vocab = int(rng.integers(2, 400))
        bits = int(rng.integers(max(10, vocab.bit_length() + 1), 31))
        tables, symbols = [], []
        for i in range(300):
            # From flat to nearly one-hot (most tokens at the floor of 1).
            logits = (rng.standard_normal(vocab) * rng.uniform(0, 60)).astype(np.float32)
            cum = quantize_row(logits, bits)
            assert cum[0] == 0 and cum[-1] == 1 << bits and bool((np.diff(cum) >= 1).all())
            tables.append(cum)
            # Mostly the rarest symbols: the hardest case for the interval arithmetic.
            symbols.append(int(np.argmin(np.diff(cum))) if i % 2 else int(rng.integers(vocab)))
        enc = ArithmeticEncoder()
        for cum, s in zip(tables, symbols):
            enc.encode(int(cum[s]), int(cum[s + 1]), int(cum[-1]))
        data = enc.finish()
        dec = ArithmeticDecoder(data)
        assert [dec.decode(cum) for cum in tables] == symbols, trial
        ideal = sum(-np.log2((c[s + 1] - c[s]) / c[-1]) for c, s in zip(tables, symbols))
        assert 8 * len(data) <= ideal + 16, (trial, 8 * len(data), ideal)


def test_uniform_table_sums_to_total() -> None:
    for vocab, bits in ((8192, 24), (1000, 16), (3, 16)):
        cum = uniform_table(vocab, bits)
        assert cum[-1] == 1 << bits and int(np.diff(cum).min()) >= (1 << bits) // vocab


def test_fixed_shape_rows_ignore_later_inputs(model: LlamaModel, tokens: np.ndarray) -> None:
    # The decoder relies on this: with causal attention and the same shape, row j (and K/V row j)
    # is bit-identical whatever the inputs after j are.
    past = model.forward(torch.from_numpy(tokens[:40]), return_kv=True)
    chunk = torch.from_numpy(tokens[40:48].copy())
    ref = model.forward(chunk, past.k, past.v, return_kv=True)
    for j in (0, 3, 6):
        other = chunk.clone()
        other[j + 1:] = torch.tensor([5, 77, 8000, 1, 2, 3, 4][:7 - j])
        r = model.forward(other, past.k, past.v, return_kv=True)
        assert torch.equal(r.logits[:j + 1], ref.logits[:j + 1])
        assert torch.equal(r.k[:, :, :j + 1], ref.k[:, :, :j + 1])
        assert torch.equal(r.v[:, :, :j + 1], ref.v[:, :, :j + 1])


def test_first_256_tokens_round_trip_near_the_bound(model: LlamaModel,
                                                    tokens: np.ndarray) -> None:
    r = round_trip(TokenCoder(model), tokens, "doc00")
    assert r.round_trip_ok and r.table_mismatches == 0 and r.first_mismatch is None, r
    assert r.tokens == 256 and r.decoder_forwards <= 256
    assert r.bits_per_token <= 1.03 * r.ideal_bits_per_token, r
    assert r.bits_per_token >= r.table_bits_per_token - 1e-9  # no coder beats its tables
    assert r.table_bits_per_token <= 1.002 * r.ideal_bits_per_token  # 24-bit tables cost ~nothing
    assert r.zstd19_int32_bits_per_token is None or r.zstd19_int32_bits_per_token > 8


def test_a_wrong_stream_is_reported(model: LlamaModel, tokens: np.ndarray) -> None:
    coder = TokenCoder(model, chunk=4)
    enc = coder.encode(tokens[:12])
    damaged = bytes([enc.data[0] ^ 0x10]) + enc.data[1:]
    assert not np.array_equal(coder.decode(damaged, 12).tokens, tokens[:12])
    with pytest.raises(QualityError, match="vocabulary"):
        coder.encode(np.array([1, 2, 8192]))


def test_cli_refuses_ids_outside_the_vocabulary(tmp_path: Path) -> None:
    ids = tmp_path / "bad.i32"
    ids.write_bytes(np.array([1, 2, 9000], dtype="<i4").tobytes())
    env = {**os.environ, "PYTHONPATH": str(REPO / "python")}
    p = subprocess.run([PYTHON, "-m", "seqkv_quality", "tokenbits", "--model", str(MODEL_DIR),
                        "--threads", "1", "--json", str(ids)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 2 and "bad.i32" in p.stderr and p.stdout == ""
    ids.write_bytes(np.array([1, 2, 3, 300, 5, 6], dtype="<i4").tobytes())
    p = subprocess.run([PYTHON, "-m", "seqkv_quality", "tokenbits", "--model", str(MODEL_DIR),
                        "--threads", "1", "--json", str(ids)],
                       capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    report = out["files"][0]
    assert out["failed"] == 0 and report["round_trip_ok"] and report["tokens"] == 6
