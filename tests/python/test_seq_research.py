"""Invariants of the sequential-codec research prototype (python/seqkv_research).

What they guard: the decoder, given only the symbols, tokens, profile and model, reproduces the
encoder's reconstruction bit for bit (closed loop); the error of every element, at every depth, is
bounded by its own quantizer step (prediction errors do not drift through the layers); layer 0 comes
back bf16-exact from the model's weights; rate control lands on its target. Small slices of two dumps
keep it to a few seconds.
"""

from __future__ import annotations

import dataclasses
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest  # noqa: E402
import torch  # noqa: E402

from seqkv_research.codec import decode, encode, encode_at_rate, to_cache  # noqa: E402
from seqkv_research.data import Chunk, ModelSide, dev_paths, load_chunk  # noqa: E402
from seqkv_research.profile import CodecOptions, calibrate, coding_domain  # noqa: E402

torch.set_num_threads(2)


def _slice(c: Chunk, t: int) -> Chunk:
    return Chunk(c.path, c.tokens[:t], c.k[:, :, :t].clone(), c.v[:, :, :t].clone(), c.theta,
                 c.first_position)


@pytest.fixture(scope="module")
def side() -> ModelSide:
    return ModelSide()


@pytest.fixture(scope="module")
def chunks() -> tuple[Chunk, Chunk]:
    paths = dev_paths()
    return _slice(load_chunk(paths[0]), 384), _slice(load_chunk(paths[5]), 192)


@pytest.fixture(scope="module")
def full_profile(side, chunks):
    return calibrate([chunks[0]], CodecOptions(), side)


@pytest.mark.parametrize("opts", [CodecOptions(), CodecOptions(pre_rope=False,
                                                                  layer0_from_model=False,
                                                                  klt=False, deadzone=0.35,
                                                                  xlayer_inputs="same")])
def test_closed_loop_decode_is_exact_and_error_bounded(opts, side, chunks, full_profile):
    cal, chunk = chunks
    prof = (dataclasses.replace(full_profile) if opts == CodecOptions()
            else calibrate([cal], opts, side))
    prof.sens = torch.rand(prof.layers, 2, prof.heads, generator=torch.Generator().manual_seed(1)) + 0.1
    enc, recon = encode(chunk, prof, 0.08, side)
    dec = decode(enc, chunk.tokens, chunk.theta, chunk.first_position, prof, side)
    assert torch.equal(dec, recon)
    enc2, recon2 = encode(chunk, prof, 0.08, side)
    assert torch.equal(enc2.q, enc.q) and torch.equal(recon2, recon)

    # Closed loop: in each group's KLT domain the error is the quantizer's own, at most
    # (1 - rho) * step per component, at every depth.
    from seqkv_research.codec import step_sizes
    x = coding_domain(chunk, opts.pre_rope)
    steps = step_sizes(prof, enc.delta0, enc.group_mult)
    first = 1 if opts.layer0_from_model else 0
    for layer in range(first, prof.layers):
        for kv in range(2):
            for head in range(prof.heads):
                err = (x[layer, kv, head] - recon[layer, kv, head]) @ prof.basis[layer, kv, head]
                bound = (1 - opts.deadzone) * steps[layer, kv, head]
                assert bool((err.abs() <= bound * 1.001 + 1e-4).all()), (layer, kv, head)


def test_layer0_from_model_is_bf16_exact(side, chunks, full_profile):
    _, chunk = chunks
    enc, recon = encode(chunk, full_profile, 0.1, side)
    k, v = to_cache(recon, chunk, True)
    assert torch.equal(k[0], chunk.k[0]) and torch.equal(v[0], chunk.v[0])
    assert enc.bits_per_layer[0] == 0.0


@pytest.mark.parametrize("target", [1.5, 2.5])
def test_rate_control_hits_target(target, side, chunks, full_profile):
    _, chunk = chunks
    enc, _ = encode_at_rate(chunk, full_profile, target, side, tol=0.01)
    assert abs(enc.bits_per_element - target) <= 0.01 * target
    # The estimate includes side information: it can never be below the empirical entropy.
    assert enc.bits >= enc.bits_empirical - 32
