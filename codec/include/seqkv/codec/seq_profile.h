// Codec profiles of the sequential lossy codec (seq:bits=, seq:kl=, seq:delta=)
// and the process-wide registry of the side information codecs may use.
//
// A profile is what `calibrate` learns once per model from sample chunks and
// every encoder and decoder of that model shares: per group g = (layer, K/V,
// kv_head), a linear predictor from the previous layer's reconstruction, a
// KLT basis, per-component step scales (from measured model-level
// sensitivities) and the group's sensitivity for the guardrail's KL proxy.
// It is serialized (docs/format.md, "seq profile"), versioned and
// checksummed; its id (XXH3-64 of the file) is written into the spec of every
// chunk that needs it, so a chunk decodes only with the exact profile.
//
// Profiles are immutable values once built; share them as
// std::shared_ptr<const SeqProfile>.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "seqkv/codec/chunk.h"
#include "seqkv/codec/codec.h"
#include "seqkv/codec/status.h"

namespace seqkv {

class KvModel;

inline constexpr uint32_t kSeqProfileMagic = 0x504B5153;  // "SQKP" little-endian
inline constexpr uint16_t kSeqProfileVersion = 1;         // without a static model
inline constexpr uint16_t kSeqProfileVersionStatic = 2;   // with one (streams=lanes)
inline constexpr uint16_t kSeqProfileVersionSigned = 3;   // and the signed model (streams=lanes2)

// Which previous-layer values feed a group's predictor.
enum class SeqInputs : uint8_t {
  kMean = 0,      // none: the predictor is a per-component mean (bias only)
  kSameHead = 1,  // the same kv_head's K and V in the previous layer (2d + 1 inputs)
  kAllHeads = 2,  // every kv_head's K and V in the previous layer (2Hd + 1 inputs)
};
std::string_view SeqInputsName(SeqInputs inputs);  // "mean", "same", "all"
Result<SeqInputs> ParseSeqInputs(std::string_view name);

struct SeqProfile {
  uint32_t layers = 0;
  uint32_t kv_heads = 0;
  uint32_t head_dim = 0;
  bool pre_rope_keys = true;      // keys are coded before RoPE
  bool layer0_from_model = false; // layer 0 is computed from the model (needs model_id's model)
  SeqInputs inputs = SeqInputs::kAllHeads;
  std::array<uint8_t, 16> model_id{};  // KvModel::id() of the calibration model (zero: none)
  float proxy_scale = 1.0f;            // KL per unit of the raw proxy (fitted; 1 = unfitted)
  bool has_sensitivity = false;        // sensitivity[] measured (else all 1: plain MSE)
  uint32_t calib_tokens = 0;           // tokens the profile was fitted on (information only)

  // Per group g = (layer * 2 + kv) * kv_heads + head, kv 0 = K, 1 = V:
  std::vector<float> predictor;   // [G][features()][head_dim]; row features()-1 is the bias
  std::vector<float> basis;       // [G][head_dim][head_dim]; row i = KLT component i
  std::vector<float> step_scale;  // [G][head_dim]: step of component i = delta0 * mult * scale
  std::vector<float> sensitivity; // [G]: nats of KL per unit of per-token squared error

  // The static entropy model of streams=lanes (docs/format.md, "Lane streams";
  // empty: none, and the profile is written as version 1):
  std::vector<int16_t> static_scale;  // [G][head_dim]: 16 log2(mean |coefficient| / step scale), or -32768
  std::vector<uint16_t> static_freq;  // [161 classes][3 contexts][16 symbols]: frequencies >= 1, rows sum to 2^15
  // The signed model of streams=lanes2 (version 3; needs the static model's
  // scales): [161 classes][31 symbols], q = s - 15 for s = 1 .. 29, s = 0 and
  // 30 escapes; frequencies >= 1, rows sum to 2^15.
  std::vector<uint16_t> signed_freq;

  uint32_t groups() const { return layers * 2 * kv_heads; }
  bool has_static_model() const { return !static_freq.empty(); }
  bool has_signed_model() const { return !signed_freq.empty(); }
  // Predictor inputs per group, bias included.
  uint32_t features() const;
  // Checks sizes and values (finite, positive scales); InvalidArgument otherwise.
  Status Validate() const;

  // Content id: XXH3-64 of Serialize(), as 16 lowercase hex digits.
  std::string Id() const;

  std::vector<uint8_t> Serialize() const;
  static Result<SeqProfile> Parse(std::span<const uint8_t> bytes);  // DataLoss on anything wrong
  static Result<SeqProfile> Load(const std::string& path);
  Status Save(const std::string& path) const;

  // Bytes of each part as stored.
  struct Size {
    uint64_t predictor = 0, basis = 0, steps = 0, static_model = 0, total = 0;
  };
  Size SizeBytes() const;
};

// What calibration is told.
struct SeqCalibrateOptions {
  bool pre_rope_keys = true;
  SeqInputs inputs = SeqInputs::kAllHeads;
  double ridge = 1e-3;  // relative to the mean diagonal of X^T X
  // Per-group sensitivities [layers][2][kv_heads] flattened as the groups are
  // (nats per unit of per-token squared error); empty = plain MSE allocation.
  std::vector<double> sensitivity;
  double proxy_scale = 1.0;
  // Fit the static entropy model of streams=lanes (FitSeqStaticModel: seven
  // closed-loop passes over the chunks).
  bool static_model = true;
};

// Per-group numbers calibration measured (for reports).
struct SeqCalibrateReport {
  std::vector<double> residual_energy;  // [G] held-in residual / raw energy after prediction
  std::vector<double> klt_gain_bits;    // [G] 0.5*log2(arith/geo mean of component variances)
  double seconds = 0;
};

// Fits a profile on chunks (all of one model's shape, rotary style and dtype).
// With a model, layer 0 is marked as computed from it and the model's id is
// recorded; the model must match the chunks' shape.
Result<SeqProfile> CalibrateSeqProfile(const std::vector<Chunk>& chunks, const SeqCalibrateOptions& options,
                                       const KvModel* model, SeqCalibrateReport* report = nullptr);

// Fits (replaces) the profile's static entropy model on chunks of its shape:
// per component the mean |coefficient| of the closed loop at a fine step, and
// per (scale class, context) the symbol frequencies pooled over the chunks'
// closed loops at the steps 1/4 .. 8 (CalibrateSeqProfile calls it).
Status FitSeqStaticModel(const std::vector<Chunk>& chunks, SeqProfile* profile);

// Reads the JSON of `python3 -m seqkv_quality sensitivity` (format
// "seqkv-sensitivity/1") into the group order above; checks the shape.
Result<std::vector<double>> ParseSensitivityJson(const std::string& text, uint32_t layers,
                                                 uint32_t kv_heads, uint32_t head_dim);

// Process-wide side information for codecs: profiles by id and models by id.
// Codecs look up what a chunk names here. Thread-safe.
class SeqResources {
 public:
  static SeqResources& Default();

  void AddProfile(std::shared_ptr<const SeqProfile> profile);
  void AddModel(std::shared_ptr<const KvModel> model);
  // NotFound with a hint when missing.
  Result<std::shared_ptr<const SeqProfile>> Profile(const std::string& id) const;
  Result<std::shared_ptr<const KvModel>> Model(const std::array<uint8_t, 16>& id) const;
  // The only registered profile, or InvalidArgument if none or several.
  Result<std::shared_ptr<const SeqProfile>> OnlyProfile() const;
  void Clear();

 private:
  SeqResources() = default;
  struct Impl;
  std::shared_ptr<Impl> impl_ = MakeImpl();
  static std::shared_ptr<Impl> MakeImpl();
};

// Counters of the lossy seq encoder in this process (all chunks, all specs).
struct SeqEncodeCounters {
  uint64_t chunks = 0;            // lossy-mode encodes
  uint64_t guardrail_raised = 0;  // the kl budget forced a finer step than bits= asked for
  uint64_t lossless_fallback = 0; // the budget could not be met lossily: coded seq:lossless
};
SeqEncodeCounters GetSeqEncodeCounters();

// What one lossy seq encode did (for reports and tests).
struct SeqEncodeInfo {
  bool lossless_fallback = false;  // coded as seq:lossless (budget unreachable lossily)
  bool guardrail_raised = false;   // kl= forced a finer step than bits= asked for
  bool layer0_from_model = false;  // layer 0 came from the model (plus a correction)
  uint64_t layer0_corrections = 0; // layer-0 elements the model did not reproduce exactly
  double delta0 = 0;               // global step
  double proxy = 0;                // estimated KL (the guardrail's proxy)
  double estimated_bits = 0;       // rate control's estimate for the final step
  uint32_t trials = 0;             // trial encodes of rate control
  std::vector<uint64_t> layer_bytes;  // coded bytes per layer (sections only)
};

// The report of the last lossy seq encode on this thread (what EncodeChunk
// did through Codec::Encode), for tools that want per-layer numbers.
const SeqEncodeInfo& SeqLastEncodeInfo();

// How a lossy seq chunk's group streams are coded (docs/format.md, "seq
// lossy", streams=).
enum class SeqStreamCoding : uint8_t {
  kAdaptive,     // streams=adaptive: one rANS stream per group, adaptive models
  kLanes,        // streams=lanes: 16 lane streams, the profile's magnitude model
  kSignedLanes,  // streams=lanes2: 16 lane streams, the profile's signed model
  kSplitLanes,   // streams=lanes3: lanes2's model and operations, each lane its own word stream
};
inline bool IsLaneCoding(SeqStreamCoding c) { return c != SeqStreamCoding::kAdaptive; }
// Lane codings with the profile's signed model (lanes2, lanes3).
inline bool IsSignedLaneCoding(SeqStreamCoding c) {
  return c == SeqStreamCoding::kSignedLanes || c == SeqStreamCoding::kSplitLanes;
}

// How a lossy seq chunk's dense stage (prediction, transform, reconstruction)
// computes (docs/format.md, "seq lossy", arith=).
enum class SeqArith : uint8_t {
  kFloat,  // arith=float: float32 operations in the reference's order
  kInt12,  // arith=int12: 12-bit fixed-point operands, exact integer sums (any order gives the same bytes)
};

// A lossy seq codec's settings, as parsed from its spec (docs/format.md,
// "seq lossy"): 0 = not given. The GPU encoder takes them from here so that it
// quantizes with exactly the CPU encoder's numbers.
struct SeqEncoderSettings {
  double bits = 0, kl = 0, delta = 0;
  double deadzone = 0.5, krate = 0, vrate = 0;
  std::vector<double> lrate;  // per layer, empty = 0
  double maxbits = 8;
  bool fallback_lossless = true;
  SeqStreamCoding streams = SeqStreamCoding::kAdaptive;
  SeqArith arith = SeqArith::kFloat;
};

// Implemented by the lossy seq codec (dynamic_cast a Codec to it).
class SeqLossyEncoder {
 public:
  virtual ~SeqLossyEncoder() = default;
  virtual SeqEncoderSettings Settings() const = 0;
  // Encode plus a report; recon (optional) receives the decoder's output.
  virtual Status EncodeWithInfo(const Chunk& chunk, std::vector<Section>* sections, SeqEncodeInfo* info,
                                Chunk* recon) const = 0;
  virtual const SeqProfile& profile() const = 0;
};

}  // namespace seqkv
