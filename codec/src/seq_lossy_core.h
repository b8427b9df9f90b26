// The sequential lossy codec's arithmetic, shared by the codec
// (seq_lossy_codec.cc) and calibration (seq_calibrate.cc). Normative
// description: docs/format.md, "seq lossy"; design: docs/seq_codec_design.md.
//
// Everything that affects decoded values is float32 in a fixed order (the
// library is built with -ffp-contract=off), so encoder and decoder on any
// machine reconstruct the same floats bit for bit.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "seqkv/codec/chunk.h"
#include "seqkv/codec/seq_profile.h"
#include "seqkv/codec/status.h"

namespace seqkv::internal {

struct RopeTable;  // engine_rope.h

std::string ModelIdHex(const std::array<uint8_t, 16>& id);

// Index of group (layer, kv, head).
inline uint32_t SeqGroup(uint32_t layer, uint32_t kv, uint32_t head, uint32_t kv_heads) {
  return (layer * 2 + kv) * kv_heads + head;
}

// The coding domain of a chunk: float32 X[layer][kv][head][token][dim], keys
// with RoPE undone when pre_rope (deterministic, engine_rope.h).
std::vector<float> SeqCodingDomain(const Chunk& chunk, bool pre_rope);
// The same for one layer only: X[kv][head][token][dim].
std::vector<float> SeqCodingDomainLayer(const Chunk& chunk, uint32_t layer, bool pre_rope);
// The same two with the caller's RoPE table for the chunk's positions (null:
// no rotation to undo), for callers that need the table anyway (the codec).
std::vector<float> SeqCodingDomain(const Chunk& chunk, const RopeTable* table);
std::vector<float> SeqCodingDomainLayer(const Chunk& chunk, uint32_t layer, const RopeTable* table);

// ---- entropy coding of one group's symbols q[token][dim] (int32) ----------
// Stream: zero-flag bitmap (ceil(dim/8) bytes, bit i set = component i has a
// non-zero symbol), u8 lanes, then if lanes > 0 an interleaved rANS stream
// ([lanes x u32 state][u16 words]) of the coded components' symbols in token-
// major order, coded component c on lane c % lanes, each component with its
// own adaptive models (one per context = min(|q| of the previous token, 2)).
inline constexpr uint32_t kSeqMaxLanes = 8;
inline constexpr int32_t kSeqMaxMagnitude = 1 << 24;
inline constexpr int kSeqSymbols = 16;  // magnitudes 0..14, 15 = escape
inline constexpr int kSeqContexts = 3;  // previous token's |q|: 0, 1, >= 2

// An adaptive distribution over kSeqSymbols with coding frequencies p[s] + 1
// that always sum to 2^15. After coding s, every p[k] gives p[k] >> rate to
// p[s] (integer, exact); the rate grows with the count n.
struct SeqAdaptiveModel {
  uint16_t p[kSeqSymbols];
  uint32_t n = 0;
  SeqAdaptiveModel();
  int Rate() const { return n < 16 ? 2 : n < 64 ? 3 : n < 256 ? 4 : 5; }
  void Update(int s);
  uint32_t Start(int s) const {
    uint32_t c = 0;
    for (int k = 0; k < s; ++k) c += p[k] + 1u;
    return c;
  }
  uint32_t Freq(int s) const { return p[s] + 1u; }
};

// The coder's state for one group: per component its models and the last
// token's symbol. A fresh state starts every chunk, or a parent-conditioned
// chunk starts from the state its parent ended with.
struct SeqGroupState {
  explicit SeqGroupState(uint32_t dim = 0) : models(size_t{dim} * kSeqContexts), prev(dim, 0) {}
  std::vector<SeqAdaptiveModel> models;  // [dim][kSeqContexts]
  std::vector<int32_t> prev;             // [dim]
};

// `state` (optional, dim components) is where the models start and, on
// return, where they ended.
std::vector<uint8_t> SeqEncodeGroup(const int32_t* q, uint32_t tokens, uint32_t dim, SeqGroupState* state = nullptr);

// Ideal code lengths in fixed point, units of 2^-kSeqCostFracBits bit, so that
// sums are exact in any order (the GPU encoder sums per component).
inline constexpr int kSeqCostFracBits = 20;
// The cost of a symbol of coding frequency f (of 2^15), f in [1, 2^15]:
// round(log2(2^15 / f) * 2^20); a uniform bit (f = 2^14) costs exactly 2^20.
const std::vector<uint32_t>& SeqCostTable();
// Ideal code length of SeqEncodeGroup's output under its own models (no rANS
// overhead; the bitmap, lane byte and states included), in those units: what
// rate control uses. `state` is read only.
uint64_t SeqEstimateGroupCost(const int32_t* q, uint32_t tokens, uint32_t dim, const SeqGroupState* state = nullptr);
// A trial's estimated bits: layer0_bits (the coded layer-0 section, when the
// model gives layer 0), the small tables, and the coded layers' summed
// SeqEstimateGroupCost.
inline double SeqTrialBits(double layer0_bits, const SeqProfile& p, uint32_t coded_layers, uint64_t cost) {
  return layer0_bits + 8.0 * (16 + p.groups()) + 64.0 * coded_layers + double(cost) / double(1u << kSeqCostFracBits);
}
// The same in bits.
double SeqEstimateGroupBits(const int32_t* q, uint32_t tokens, uint32_t dim, const SeqGroupState* state = nullptr);
Status SeqDecodeGroup(std::span<const uint8_t> stream, uint32_t tokens, uint32_t dim, int32_t* q,
                      SeqGroupState* state = nullptr);

// ---- lane streams (streams=lanes; seq_lanes.h, docs/format.md) -------------
// The profile's static model as the coder uses it: cumulative rows and code
// lengths per (scale class, context).
struct SeqStaticTables {
  std::vector<uint16_t> cum;   // [kSeqStaticClasses][kSeqContexts][kSeqLaneRowStride] (17 used)
  std::vector<uint32_t> cost;  // [kSeqStaticClasses][kSeqContexts][16], SeqCostTable units
  // The signed model (streams=lanes2), empty when the profile has none:
  std::vector<uint16_t> signed_cum;   // [kSeqStaticClasses][kSeqSignedRowStride] (32 used)
  std::vector<uint32_t> signed_cost;  // [kSeqStaticClasses][kSeqSignedSymbols]
};
// Which static model a lane stream codes with: magnitude classes under the
// previous token's context plus a sign operation (streams=lanes), or one
// signed alphabet without context (streams=lanes2).
// kSplit (streams=lanes3) codes kSigned's operations, each lane on its own
// word stream (seq_lanes.h, "split lane streams").
enum class SeqLaneModel : uint8_t { kMagnitude = 0, kSigned = 1, kSplit = 2 };
// The model of a lane coding (streams=lanes2: the signed one; lanes3: split).
inline SeqLaneModel SeqLaneModelOf(SeqStreamCoding c) {
  return c == SeqStreamCoding::kSignedLanes  ? SeqLaneModel::kSigned
         : c == SeqStreamCoding::kSplitLanes ? SeqLaneModel::kSplit
                                             : SeqLaneModel::kMagnitude;
}
// Empty tables when the profile has no static model.
SeqStaticTables MakeSeqStaticTables(const SeqProfile& profile);
// The GPU's search table of the signed model (seq_lanes.h,
// SeqSignedFindBucket): buckets [kSeqStaticClasses][kSeqSignedBuckets]; zeros
// without the model.
std::vector<uint8_t> SeqSignedBuckets(const SeqStaticTables& tables);
// What the GPU lane kernel copies: the signed cumulative rows' bytes
// (tables.signed_cum), then the buckets; empty without the model.
std::vector<uint8_t> SeqSignedSearchBytes(const SeqStaticTables& tables);
// A static row: frequencies (>= 1 each, summing to 2^15) from counts > 0 of
// the 16 symbols: the proportional share rounded down, at least 1; a
// shortfall goes to the largest, an excess is taken from the largest, at most
// half of it at a time.
void SeqStaticRow(const uint64_t* counts, uint16_t* freq, int symbols = kSeqSymbols);
// round(16 log2 x) clamped to [-32767, 32767], for x > 0: the unit of step
// classes and of the profile's static scales.
int16_t SeqLog2Sixteenths(double x);
// The chunk's step class: SeqLog2Sixteenths(delta0) (encoder only; the chunk
// records it).
inline int16_t SeqStepClass(float delta0) { return SeqLog2Sixteenths(double(delta0)); }
// Fitting a static model: counts [kSeqStaticClasses][kSeqContexts][16] start
// at 1 (add-one-half, doubled); this adds 2 per symbol of one group's q
// [tokens][dim], component i in the table of SeqStaticClass(scale[i],
// step_class, code) under the context of its previous token's symbol.
// signed_counts (optional) [kSeqStaticClasses][kSeqSignedSymbols] gets the
// same for the signed model (no context).
void SeqAddStaticCounts(const int32_t* q, uint32_t tokens, uint32_t dim, const int16_t* scale, int16_t step_class,
                        uint8_t code, uint64_t* counts, uint64_t* signed_counts = nullptr);
// The frequencies of such counts, row by row of `symbols` (SeqStaticRow).
std::vector<uint16_t> SeqStaticFreqs(const std::vector<uint64_t>& counts, int symbols = kSeqSymbols);
// The classes before the shift (seq_lanes.h, SeqLaneClass) of every
// component of group g, as int16.
void SeqLaneClasses(const SeqProfile& profile, uint32_t g, int16_t step_class, uint8_t code, int16_t* k);
// Stream: the zero-flag bitmap, u8 lanes = min(kSeqLaneMax, coded components),
// and if lanes > 0: i8 class shift (|shift| <= kSeqLaneMaxShift), lanes x u32
// states, the shared u16 words (seq_lanes.h's order). The encoder takes the
// shift of the smallest code length (ties: the smaller |shift|, then the
// negative one).
std::vector<uint8_t> SeqEncodeLaneGroup(const int32_t* q, uint32_t tokens, uint32_t dim,
                                        const SeqStaticTables& tables, const int16_t* k,
                                        SeqLaneModel model = SeqLaneModel::kMagnitude);
// Ideal code length of that stream (bitmap, lane byte, shift and states
// included), in SeqCostTable units; *shift (optional) receives the shift.
uint64_t SeqEstimateLaneGroupCost(const int32_t* q, uint32_t tokens, uint32_t dim, const SeqStaticTables& tables,
                                  const int16_t* k, int* shift = nullptr,
                                  SeqLaneModel model = SeqLaneModel::kMagnitude);
Status SeqDecodeLaneGroup(std::span<const uint8_t> stream, uint32_t tokens, uint32_t dim,
                          const SeqStaticTables& tables, const int16_t* k, int32_t* q,
                          SeqLaneModel model = SeqLaneModel::kMagnitude);

// ---- the closed loop ------------------------------------------------------
// arith=int12: the profile's operands of one group in fixed point
// (SeqToFixed, below; docs/format.md).
struct SeqFixedGroup {
  std::vector<int16_t> w;  // predictor feature rows [F - 1][d] (not the bias row)
  // w's rows in pairs (c, c + 1) of each d-row block, interleaved per column:
  // [(F - 1) / 2][d][2] (even d; empty otherwise), for pairwise integer products.
  std::vector<int16_t> w_pairs;
  std::vector<int16_t> u;  // basis [d][d] (the encoder's forward transform)
  std::vector<int16_t> v;  // float(step_scale[i] * basis[i][j]), [d][d] (reconstruction)
  int ew = 0, eu = 0, ev = 0;
};
// Every group's, [G]: made once per codec (a loop without them makes its own).
std::vector<SeqFixedGroup> SeqFixedGroups(const SeqProfile& profile);

struct SeqLoopParams {
  float delta0 = 1.0f;
  std::vector<uint8_t> mult_code;  // [G]; step multiplier 2^((code - 128) / 16)
  float rho = 0.5f;                // rounding offset (encoder only)
  bool layer0_exact = false;       // layer 0 is given exactly (model + correction)
  // Measurement only (tests/codec/seq_gpu_variants_test.cc, not reachable from
  // a spec): > 0 rounds the predictor's features to this many bits of signed
  // fixed point, per block of head_dim columns a power-of-two scale from the
  // block's largest value, to measure integer arithmetic's cost.
  int feature_bits = 0;
  // Measurement only, as feature_bits: > 0 gives the transform this many bits
  // of fixed point: the encoder's residual rows (one scale per group's
  // tokens x head_dim block) and the reconstruction's weights step_scale[i] *
  // U[i][j] (one scale per group; the step's chunk factor delta0 * multiplier
  // applied after the sum), the forms an integer transform would take.
  int transform_bits = 0;
  // The dense stage's arithmetic (the chunk's arith=; docs/format.md).
  SeqArith arith = SeqArith::kFloat;
  // arith=int12: SeqFixedGroups(profile), not owned; null: the loop makes them.
  const std::vector<SeqFixedGroup>* fixed_groups = nullptr;
};

// Fixed point for arith=int12: values v as integers n with |n| <= 2047 and
// one power-of-two scale 2^e per block, e the smallest with max |v| <= 2047 *
// 2^e (exactly: frexp, then checked with ldexp), n = round-half-even(v / 2^e).
// Non-finite values are taken as 0; an all-zero block has e = 0.
inline constexpr int kSeqFixedBits = 12;
inline constexpr int32_t kSeqFixedMax = (1 << (kSeqFixedBits - 1)) - 1;  // 2047
int SeqFixedExponent(double max_abs);
// The int32 sums over a head_dim block stay exact up to 512 terms (512 * 2047^2 < 2^31).
inline constexpr uint32_t kSeqFixedMaxDim = 512;
// v [rows][cols] (row stride `stride`) into out [rows][cols]; returns e.
int SeqToFixed(const float* v, size_t rows, size_t stride, size_t cols, int16_t* out);

// A [rows][cols] block of v (row stride `stride`) rounded to `bits`-bit signed
// fixed point with one power-of-two scale: the smallest 2^e with every |value|
// <= (2^(bits-1) - 1) 2^e. For measurements of integer arithmetic
// (SeqLoopParams::feature_bits, tests/codec/seq_gpu_variants_test.cc).
void SeqRoundFixedPoint(float* v, size_t rows, size_t stride, size_t cols, int bits);

// Step multiplier of a code, deterministic: 2^((code - 128) / 16) from + and
// * only, SeqMultipliers()[code].
double SeqMultiplier(uint8_t code);
// The multipliers of all 256 codes, made once (the GPU decoder uploads them
// and makes its step bases from them).
const std::array<double, 256>& SeqMultipliers();
// The code of 2^-bits (extra bits of rate): clamp(round(128 - 16 bits), 0, 255).
uint8_t SeqRateCode(double bits);
// The step codes [G] of the spec keys krate=, vrate= and lrate= (one value per
// layer; empty = 0): keys krate + lrate[l], values vrate + lrate[l].
std::vector<uint8_t> SeqStepCodes(const SeqProfile& profile, double krate, double vrate,
                                  const std::vector<double>& lrate);

// The quantizer: symbol of coefficient c with step `step` and rounding offset
// rho, floor(|c| / step + rho) with the sign of c, the magnitude capped at
// kSeqMaxMagnitude (also for NaN). The GPU encoder uses the same operations.
inline int32_t SeqQuantize(float c, float step, float rho) {
  const float a = __builtin_fabsf(c) / step + rho;
  const float m = a < static_cast<float>(kSeqMaxMagnitude) ? __builtin_floorf(a) : static_cast<float>(kSeqMaxMagnitude);
  const int32_t v = static_cast<int32_t>(m);
  return c < 0 ? -v : v;
}

// Squared error of one group (x and xhat [tokens][d]) in double, summed in a
// fixed order that a GPU computes in parallel: per tile of kSeqSseTile tokens
// and per channel j (ascending) a partial sum over the tile's tokens
// (ascending) from 0.0, the partials added to the total in (tile, j) order.
inline constexpr uint32_t kSeqSseTile = 16;
double SeqGroupSse(const float* x, const float* xhat, uint32_t tokens, uint32_t d);
// Group g's step factor double(delta0) * multiplier(code_g); its steps are
// float(factor * step_scale[g][i]).
double SeqStepBase(const SeqLoopParams& params, uint32_t g);
// Steps [G][dim] as float32.
std::vector<float> SeqSteps(const SeqProfile& profile, const SeqLoopParams& params);

struct SeqLoopResult {
  std::vector<int32_t> q;     // [G][T][dim] symbols (groups of an exact layer 0: unused)
  std::vector<float> xhat;    // [L][2][H][T][dim] reconstruction, coding domain
  std::vector<double> sse;    // [G] squared error vs x (encoder only)
};

// Encoder: quantizes x (coding domain) layer by layer, predicting each layer
// from the reconstruction of the one below. layer0 (coding domain of the
// exact layer 0, [2][H][T][dim]) is used when params.layer0_exact.
void SeqEncodeLoop(const SeqProfile& profile, uint32_t tokens, const float* x, const float* layer0,
                   const SeqLoopParams& params, SeqLoopResult* out);
// Decoder: rebuilds xhat from the symbols in out->q (filled by the caller).
void SeqDecodeLoop(const SeqProfile& profile, uint32_t tokens, const float* layer0, const SeqLoopParams& params,
                   SeqLoopResult* out);

// ---- the container's small tables (docs/format.md, "seq lossy: Sections") ----
inline constexpr uint32_t kSeqParamsSection = 1;
inline constexpr uint32_t kSeqLayer0Section = 2;
inline constexpr uint32_t kSeqLayerSectionBase = 16;  // + layer
inline constexpr uint8_t kSeqModeLossy = 0, kSeqModeLossless = 1;

// Section 1 of a lossy chunk after its mode byte: u8 layer-0 mode, u16 stream
// coding (SeqStreamCoding: 0 adaptive, 1 lanes, 2 signed lanes), f32 delta0, f32 proxy, u64 parent hash, u32 G
// (must be the profile's), G step codes, and with lanes an i16 step class. DATA_LOSS ("seq: bad parameters") for anything else. One parser for
// the codec's decoder and the GPU decoder (gpu/src/seq_decode.cc).
struct SeqLossyParams {
  SeqLoopParams loop;        // delta0, mult_code, layer0_exact
  uint64_t parent_hash = 0;  // 0: the chunk continues no parent
  SeqStreamCoding streams = SeqStreamCoding::kAdaptive;  // how the layer sections' group streams are coded
  int16_t step_class = 0;    // lanes: SeqStepClass(delta0), as the encoder wrote it
};
// Checked against the chunk's profile: G is its group count, and lane
// streams need its static model and never continue a parent.
Result<SeqLossyParams> ParseSeqLossyParams(std::span<const uint8_t> after_mode, const SeqProfile& profile);
// Section 1 of a lossy chunk, mode byte included; `proxy` is the encoder's.
std::vector<uint8_t> PackSeqLossyParams(const SeqLossyParams& params, float proxy);

// A layer section: u32 n (must be `expected`), n x u32 length, the n streams.
std::vector<uint8_t> PackSeqStreams(const std::vector<std::vector<uint8_t>>& streams);
Result<std::vector<std::span<const uint8_t>>> UnpackSeqStreams(std::span<const uint8_t> data, uint32_t expected);

// ---- rate control ----------------------------------------------------------
// The search for the step delta0 of bits=, kl= and delta= as a resumable
// state machine, so that the CPU encoder (one chunk, trial after trial) and
// the GPU encoder (a batch, one round of trials at a time) take the same
// steps: while (!done()) { trial at delta(); Report(bits, proxy); }.
//   bits=B: a safeguarded secant search on log(delta0) for B bits/element
//           from delta0 0.3, the closest trial kept; the first step assumes
//           bits fall 1.44 per unit of log step with adaptive streams, and
//           1.019 + 0.103 B with lane streams (SeqRateFirstSlope);
//   kl=D:   the largest step whose proxy is <= D (aim 1.5% under it; the proxy
//           grows ~2 per unit), after bits= when bits='s step exceeds D;
//   delta=X: one trial at X (kept).
// Typically 3-6 trials. `lossless()`: kl= found no step within the budget, or
// only one above maxbits (the codec's fallback decides what happens).
class SeqRateSearch {
 public:
  SeqRateSearch(double bits, double kl, double delta, double maxbits, SeqStreamCoding coding);
  bool done() const { return phase_ == Phase::kDone; }
  double delta() const { return next_; }  // the next trial's step (!done())
  // The trial at delta() gave `bits` per element and `proxy`; true when it
  // is now the chosen one.
  bool Report(double bits, double proxy);

  double chosen_delta() const { return chosen_delta_; }
  double bits() const { return bits_; }
  double proxy() const { return proxy_; }
  bool lossless() const { return lossless_; }
  bool guardrail_raised() const { return raised_; }

 private:
  enum class Phase { kBits, kKl, kFixed, kDone };
  struct Secant {  // a secant search with the slope clamped, bisection when it leaves the bracket
    double lo, hi, slope, min_slope, max_slope;
    double prev_x, prev_f;
    double Next(double x, double f, double target, bool root_above);
  };
  void AfterBits();
  void StartKl();
  void EndKl();
  void StartFixed();
  void Keep(double delta, double bits, double proxy);

  double opt_bits_, opt_kl_, opt_delta_, opt_maxbits_;
  Phase phase_ = Phase::kDone;
  Secant search_{};
  double x_ = 0, next_ = 0, best_ = 0, aim_ = 0;
  int it_ = 0;
  bool found_ = false;
  double chosen_delta_ = 0, bits_ = 0, proxy_ = 0;
  bool lossless_ = false, raised_ = false;
};

// The bits= search's first slope, d(bits per element) / d(log delta0), for a
// target of `bits`. Lane streams' bits fall slower than the adaptive
// streams' as the step grows (their static model codes the tails with fewer
// bits): fitted on the 256-token pieces of the dev dumps doc00-03 (the slope
// from delta0 0.3 to the step each target needed); on doc04-07 it takes lane
// streams 2.0-3.0 trial encodes per chunk instead of 3.0-3.9 at bits=1.5-3
// (docs/BENCHMARKS.md, "rate-control trials"). Adaptive streams keep -1.44,
// which fits them as well as a fitted line does.
double SeqRateFirstSlope(SeqStreamCoding coding, double bits);

// KL proxy of a reconstruction: proxy_scale * sum_g sensitivity_g * SSE_g / T.
double SeqProxy(const SeqProfile& profile, const std::vector<double>& sse, uint32_t tokens);

}  // namespace seqkv::internal
