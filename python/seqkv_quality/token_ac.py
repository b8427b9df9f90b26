"""Token ids coded with the model's own next-token probabilities (the token tier "with the model").

A cache can be rebuilt from its token ids by running the model, so the ids are the cache's lossless
floor. Coded with an arithmetic coder driven by the model's next-token distribution, they cost about
the model's cross-entropy (~5 bits/token here) instead of ~10 for zstd over the raw ids.

The catch is that the decoder must compute exactly the encoder's probabilities, bit for bit: one
differing table shifts the coder's interval and every later token decodes wrong. A decoder only
knows the tokens before the one it decodes, and the model's float32 arithmetic depends on the shape
of the computation: measured here, an incremental (one token at a time) pass and one pass over the
whole sequence agree bit for bit on only 2 of 256 positions (logits differ by up to 3e-5); on the 8
dev dumps 796-968 of the 1023 quantized tables of a whole-sequence pass differ from those of the
schedule below (`onepass_table_mismatches`). So the two ends use one schedule:

- The sequence is cut into chunks of `chunk` positions. The encoder runs one forward per chunk, on
  the cache (K/V) of the chunks before: forward(tokens[a:a+n], past = K/V of [0, a)).
- The decoder runs forwards of that same shape. Positions of the chunk it has not decoded yet hold
  guesses; with causal attention and a fixed shape, row j depends only on inputs <= j, bit for bit
  (checked in tests/python/test_token_ac.py), so the rows up to the first unknown input are the
  encoder's. Each forward decodes at least one token and keeps going while the guesses turn out
  right (guesses: the argmax of the previous forward's rows, i.e. Jacobi iteration; they save only
  ~3% of the forwards, measured, because a guess two positions ahead is rarely right). The forward
  in which the whole chunk was right gives the encoder's K/V for the next chunk.
- chunk 1 is plain incremental decoding at both ends; larger chunks make the encoder cheaper
  (T/chunk forwards) and the decoder a little more expensive per forward.
- Both ends must use the same model, dtype, matmul path and thread count; `round_trip` checks every
  decoded table against the encoder's (a digest per position) and reports a mismatch as an error.

Tables: float32 logits -> float64 softmax -> integer frequencies summing to 2^freq_bits, every token
at least 1 (floor(p * (2^bits - vocab)) + 1, the remainder to the most likely token). With a vocab
of 8192, 16-bit frequencies reserve 1/8 of the range for the floor of 1 (measured on doc00: +0.058
bits/token, +1.0%, over 24 bits), so the default is freq_bits_for(vocab) = log2(vocab) + 11, clamped
to [16, 30] (24 here: the floor takes 0.05%).
The first token has no context and is coded uniformly (log2(vocab) bits).

Coder: a binary arithmetic coder (Witten-Neal-Cleary with underflow bits, as in Nayuki's
reference implementation) on 62-bit integer state, so the range stays >= 2^60 and the rounding of
each interval costs nothing measurable. The stream ends with one '1' bit, padded with zeros to a
byte; the decoder reads zeros past the end. The token count and the options travel outside the
stream (in a chunk header); they are not counted in coded_bytes.
"""

from __future__ import annotations

import hashlib
import math
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import QualityError
from .model import LlamaModel
from .safetensors import read_safetensors

LN2 = math.log(2.0)
DEFAULT_CHUNK = 8

# ------------------------------------------------------------------------------------ the coder

_STATE_BITS = 62
_FULL = 1 << _STATE_BITS
_HALF = _FULL >> 1
_QUARTER = _HALF >> 1
_MASK = _FULL - 1
MAX_FREQ_BITS = 30  # total must stay <= _QUARTER + 2 (Nayuki's condition); 30 leaves a wide margin


class ArithmeticEncoder:
    """Codes symbols given as [cum_lo, cum_hi) of a total; total <= 2^30, cum_hi > cum_lo."""

    def __init__(self) -> None:
        self._low, self._high, self._pending = 0, _MASK, 0
        self._bits: list[int] = []

    def encode(self, cum_lo: int, cum_hi: int, total: int) -> None:
        rng = self._high - self._low + 1
        self._high = self._low + cum_hi * rng // total - 1
        self._low = self._low + cum_lo * rng // total
        while not (self._low ^ self._high) & _HALF:      # same top bit: it is final
            bit = self._low >> (_STATE_BITS - 1)
            self._bits.append(bit)
            self._bits.extend([bit ^ 1] * self._pending)
            self._pending = 0
            self._low = (self._low << 1) & _MASK
            self._high = ((self._high << 1) & _MASK) | 1
        while self._low & ~self._high & _QUARTER:       # low = 01..., high = 10...: underflow
            self._pending += 1
            self._low = (self._low << 1) ^ _HALF
            self._high = ((self._high ^ _HALF) << 1) | _HALF | 1

    def finish(self) -> bytes:
        """One '1' bit selects a value inside the final interval (low < 1/2 <= high, in the scaled
        coordinates, which pending underflow bits map back onto 1 then zeros); zero padding."""
        bits = self._bits + [1]
        return np.packbits(np.array(bits, dtype=np.uint8)).tobytes()


class ArithmeticDecoder:
    """Reads what ArithmeticEncoder wrote; bits past the end of the data are zeros."""

    def __init__(self, data: bytes) -> None:
        self._bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8)).tolist()
        self._pos = 0
        self._low, self._high = 0, _MASK
        self._code = 0
        for _ in range(_STATE_BITS):
            self._code = (self._code << 1) | self._next_bit()

    def _next_bit(self) -> int:
        pos = self._pos
        self._pos += 1
        return self._bits[pos] if pos < len(self._bits) else 0

    def decode(self, cum: np.ndarray) -> int:
        """cum: int64 [n + 1], cum[0] = 0, cum[n] = total, strictly increasing; returns the
        symbol."""
        total = int(cum[-1])
        rng = self._high - self._low + 1
        value = ((self._code - self._low + 1) * total - 1) // rng
        sym = int(np.searchsorted(cum, value, side="right")) - 1
        cum_lo, cum_hi = int(cum[sym]), int(cum[sym + 1])
        self._high = self._low + cum_hi * rng // total - 1
        self._low = self._low + cum_lo * rng // total
        while not (self._low ^ self._high) & _HALF:
            self._code = ((self._code << 1) & _MASK) | self._next_bit()
            self._low = (self._low << 1) & _MASK
            self._high = ((self._high << 1) & _MASK) | 1
        while self._low & ~self._high & _QUARTER:
            self._code = ((self._code & _HALF) | ((self._code << 1) & (_MASK >> 1))
                          | self._next_bit())
            self._low = (self._low << 1) ^ _HALF
            self._high = ((self._high ^ _HALF) << 1) | _HALF | 1
        return sym


# ------------------------------------------------------------------------------------ tables

def freq_bits_for(vocab: int) -> int:
    """Frequency precision: the floor of 1 per token then takes vocab / 2^bits ~= 0.05% of the
    range."""
    return min(MAX_FREQ_BITS, max(16, math.ceil(math.log2(vocab)) + 11))


def quantize_row(logits: np.ndarray, freq_bits: int) -> np.ndarray:
    """Cumulative frequencies int64 [vocab + 1] from one row of float32 logits.

    Deterministic: a function of the row's float32 values only (float64 softmax, floor, and the
    remainder to the first most likely token), so equal logits give equal tables on both ends.
    """
    vocab = logits.shape[0]
    total = 1 << freq_bits
    if vocab > total // 2:
        raise QualityError(f"vocabulary {vocab} too large for {freq_bits}-bit frequencies")
    x = np.array(logits, dtype=np.float64)
    x -= x.max()
    p = np.exp(x)
    p /= p.sum()
    freq = np.floor(p * (total - vocab)).astype(np.int64) + 1
    top = int(np.argmax(freq))
    freq[top] += total - int(freq.sum())
    if freq[top] < 1:  # cannot happen (sum of floors <= total - vocab); guards the contract
        raise QualityError("frequency quantization failed")
    cum = np.zeros(vocab + 1, dtype=np.int64)
    np.cumsum(freq, out=cum[1:])
    return cum


def uniform_table(vocab: int, freq_bits: int) -> np.ndarray:
    """The first token's table: total / vocab each, the remainder one each to the lowest ids."""
    total = 1 << freq_bits
    freq = np.full(vocab, total // vocab, dtype=np.int64)
    freq[: total % vocab] += 1
    cum = np.zeros(vocab + 1, dtype=np.int64)
    np.cumsum(freq, out=cum[1:])
    return cum


def _digest(cum: np.ndarray) -> bytes:
    return hashlib.blake2b(cum.tobytes(), digest_size=16).digest()


# ------------------------------------------------------------------------------------ model side

@dataclass
class EncodeResult:
    data: bytes
    tokens: int
    ideal_bits: float        # sum of -log2 p(token) under the float64 softmax (first: log2 vocab)
    table_bits: float        # sum of -log2 (freq / total) under the quantized tables
    digests: list[bytes]     # per position, of the table it was coded with
    forwards: int
    seconds: float


@dataclass
class DecodeResult:
    tokens: np.ndarray
    digests: list[bytes]
    forwards: int
    rows: int                # forward rows computed (chunk-shaped forwards x their length)
    seconds: float


def _chunks(n_tokens: int, chunk: int) -> list[tuple[int, int]]:
    return [(a, min(n_tokens, a + chunk)) for a in range(0, n_tokens, chunk)]


def _append(past: tuple[torch.Tensor, torch.Tensor] | None, k: torch.Tensor, v: torch.Tensor
            ) -> tuple[torch.Tensor, torch.Tensor]:
    if past is None:
        return k, v
    return torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)


class TokenCoder:
    """Codes token-id sequences with one model. Not thread-safe (the model is not)."""

    def __init__(self, model: LlamaModel, chunk: int = DEFAULT_CHUNK, freq_bits: int | None = None):
        if chunk < 1:
            raise QualityError("chunk must be at least 1")
        self.model = model
        self.vocab = model.cfg.vocab_size
        self.chunk = chunk
        self.freq_bits = freq_bits_for(self.vocab) if freq_bits is None else freq_bits
        if not 1 <= self.freq_bits <= MAX_FREQ_BITS or self.vocab > (1 << self.freq_bits) // 2:
            raise QualityError(f"freq_bits {self.freq_bits} must be in [log2(vocab) + 1, "
                               f"{MAX_FREQ_BITS}] for a vocabulary of {self.vocab}")

    def _forward(self, tokens: torch.Tensor, past) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """The one computation both ends share: float32 K/V kept exactly as computed."""
        r = self.model.forward(tokens, None if past is None else past[0],
                               None if past is None else past[1], kv_round="none",
                               return_kv=True)
        return r.logits.numpy(), r.k, r.v

    def check_tokens(self, tokens: np.ndarray) -> None:
        if tokens.ndim != 1 or tokens.size == 0:
            raise QualityError("token sequence must be 1-D and non-empty")
        if int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab:
            raise QualityError(f"token ids outside the model's vocabulary [0, {self.vocab})")

    def encode(self, tokens: np.ndarray) -> EncodeResult:
        start = time.perf_counter()
        tokens = np.asarray(tokens, dtype=np.int64)
        self.check_tokens(tokens)
        n, total = tokens.size, 1 << self.freq_bits
        enc = ArithmeticEncoder()
        cum = uniform_table(self.vocab, self.freq_bits)
        enc.encode(int(cum[tokens[0]]), int(cum[tokens[0] + 1]), total)
        digests = [_digest(cum)]
        ideal = math.log2(self.vocab)
        table = -math.log2(int(cum[tokens[0] + 1] - cum[tokens[0]]) / total)
        past, forwards = None, 0
        tok_t = torch.from_numpy(tokens)
        for a, b in _chunks(n, self.chunk):
            logits, k, v = self._forward(tok_t[a:b], past)
            forwards += 1
            past = _append(past, k, v)
            for j in range(b - a):           # row j predicts position a + j + 1
                t = a + j + 1
                if t >= n:
                    break
                cum = quantize_row(logits[j], self.freq_bits)
                lo, hi = int(cum[tokens[t]]), int(cum[tokens[t] + 1])
                enc.encode(lo, hi, total)
                digests.append(_digest(cum))
                row = logits[j].astype(np.float64)
                m = row.max()
                lse = m + math.log(float(np.exp(row - m).sum()))
                ideal += (lse - row[tokens[t]]) / LN2
                table -= math.log2((hi - lo) / total)
        return EncodeResult(enc.finish(), n, ideal, table, digests, forwards,
                            time.perf_counter() - start)

    def decode(self, data: bytes, n: int) -> DecodeResult:
        """Decodes n tokens knowing only the stream, n and the options (what a receiver has)."""
        start = time.perf_counter()
        dec = ArithmeticDecoder(data)
        out = np.zeros(n, dtype=np.int64)
        cum = uniform_table(self.vocab, self.freq_bits)
        out[0] = dec.decode(cum)
        digests = [_digest(cum)]
        past, forwards, rows = None, 0, 0
        for a, b in _chunks(n, self.chunk):
            width = b - a
            guess = np.zeros(width, dtype=np.int64)
            known = 1                           # inputs a .. a+known-1 are decoded
            chunk_done = False
            while not chunk_done:
                guess[:known] = out[a:a + known]
                logits, k, v = self._forward(torch.from_numpy(guess.copy()), past)
                forwards += 1
                rows += width
                j = known - 1                   # rows <= known-1 see only decoded inputs
                while True:
                    t = a + j + 1
                    if t >= n:                  # the last chunk's last row predicts nothing
                        chunk_done = True
                        break
                    cum = quantize_row(logits[j], self.freq_bits)
                    out[t] = dec.decode(cum)
                    digests.append(_digest(cum))
                    if j + 1 == width:          # first input of the next chunk: this one is done,
                        chunk_done = True       # and this forward saw all its inputs right
                        past = _append(past, k, v)
                        break
                    known += 1
                    if guess[j + 1] != out[t]:  # row j+1 saw a wrong input: run again
                        guess[j + 2:] = logits[j + 1:width - 1].argmax(-1)
                        break
                    j += 1
        return DecodeResult(out, digests, forwards, rows, time.perf_counter() - start)


# ------------------------------------------------------------------------------------ report

def load_tokens(path: str | Path) -> np.ndarray:
    """Token ids from a dump (its `tokens` tensor; k/v are not needed), or a raw file of
    little-endian ids: .u16 (uint16) or .i32 (int32)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        tensors, _ = read_safetensors(path)
        if "tokens" not in tensors:
            raise QualityError(f"{path}: no tensor 'tokens' (has {sorted(tensors)})")
        t = tensors["tokens"]
        if t.dim() != 1 or t.dtype.is_floating_point:
            raise QualityError(f"{path}: tokens must be a 1-D integer tensor, got {t.dtype} "
                               f"{tuple(t.shape)}")
        return t.to(torch.int64).numpy()
    dtypes = {".u16": "<u2", ".i32": "<i4"}
    if path.suffix not in dtypes:
        raise QualityError(f"{path}: unknown token file type (.safetensors, .u16 or .i32)")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise QualityError(f"{path}: cannot read: {e.strerror or e}") from e
    size = np.dtype(dtypes[path.suffix]).itemsize
    if len(raw) % size:
        raise QualityError(f"{path}: {len(raw)} bytes is not a whole number of {size}-byte ids")
    return np.frombuffer(raw, dtype=dtypes[path.suffix]).astype(np.int64)


def matmul_params(model: LlamaModel) -> int:
    """Weights that take part in a product per token (all 2-D weights but the embedding lookup;
    a tied output head counts once, as the product it is)."""
    return sum(t.numel() for name, t in model.w.items()
               if t.dim() == 2 and name != "embed_tokens.weight")


def zstd_bits(raw: bytes, level: int = 19) -> float | None:
    """Compressed size in bits with the zstd command line, or None if it is not installed."""
    exe = shutil.which("zstd")
    if exe is None:
        return None
    p = subprocess.run([exe, f"-{level}", "-q", "-c", "-"], input=raw, capture_output=True,
                       check=False)
    if p.returncode != 0:
        return None
    return 8.0 * len(p.stdout)


@dataclass
class TokenBitsReport:
    """One sequence's numbers; field names are the JSON keys of `tokenbits`."""

    file: str
    tokens: int
    coded_bytes: int
    bits_per_token: float
    ideal_bits_per_token: float     # -mean log2 p, first token log2(vocab): the bound
    table_bits_per_token: float     # what the quantized tables allow (coder overhead excluded)
    zstd19_int32_bits_per_token: float | None
    zstd19_u16_bits_per_token: float | None
    encode_seconds: float
    decode_seconds: float
    encoder_forwards: int
    decoder_forwards: int
    decoder_rows: int
    forward_flops: float            # 2 x matmul params x tokens, one end (attention not counted)
    decoder_flops: float            # 2 x matmul params x rows the decoder actually ran
    table_mismatches: int           # decoder tables whose digest differs from the encoder's
    onepass_table_mismatches: int | None  # tables a single whole-sequence forward would give
                                          # differently (why the chunk schedule exists)
    round_trip_ok: bool
    first_mismatch: int | None = None  # first position with a wrong token or table

    def to_dict(self) -> dict:
        return asdict(self)


def onepass_mismatches(coder: TokenCoder, tokens: np.ndarray, digests: list[bytes]) -> int:
    """How many positions' tables differ when computed by one forward over the whole sequence (the
    cheap encoder a decoder could not follow) instead of the chunk schedule."""
    logits = coder.model.forward(torch.from_numpy(tokens)).logits.numpy()
    return sum(_digest(quantize_row(logits[t - 1], coder.freq_bits)) != digests[t]
               for t in range(1, tokens.size))


def round_trip(coder: TokenCoder, tokens: np.ndarray, name: str = "",
               check_onepass: bool = True) -> TokenBitsReport:
    """Encodes, decodes from the bytes alone, and checks tokens and tables against the encoder's.
    check_onepass: also count onepass_mismatches (one more forward; None when off)."""
    tokens = np.asarray(tokens, dtype=np.int64)
    enc = coder.encode(tokens)
    dec = coder.decode(enc.data, enc.tokens)
    n = enc.tokens
    mismatched = [i for i, (x, y) in enumerate(zip(enc.digests, dec.digests)) if x != y]
    wrong = np.nonzero(dec.tokens != tokens)[0]
    ok = not mismatched and wrong.size == 0 and len(dec.digests) == n
    first = None
    if not ok:
        first = int(min([*mismatched[:1], *wrong[:1].tolist()], default=n))
    params = matmul_params(coder.model)
    z32 = zstd_bits(tokens.astype("<i4").tobytes())
    z16 = zstd_bits(tokens.astype("<u2").tobytes()) if coder.vocab <= 1 << 16 else None
    return TokenBitsReport(
        file=name, tokens=n, coded_bytes=len(enc.data), bits_per_token=8.0 * len(enc.data) / n,
        ideal_bits_per_token=enc.ideal_bits / n, table_bits_per_token=enc.table_bits / n,
        zstd19_int32_bits_per_token=None if z32 is None else z32 / n,
        zstd19_u16_bits_per_token=None if z16 is None else z16 / n,
        encode_seconds=enc.seconds, decode_seconds=dec.seconds, encoder_forwards=enc.forwards,
        decoder_forwards=dec.forwards, decoder_rows=dec.rows,
        forward_flops=2.0 * params * n, decoder_flops=2.0 * params * dec.rows,
        table_mismatches=len(mismatched),
        onepass_table_mismatches=(onepass_mismatches(coder, tokens, enc.digests)
                                  if check_onepass else None),
        round_trip_ok=ok, first_mismatch=first)
