// seq's lossy modes: seq:bits=B, seq:kl=D, seq:delta=X (docs/format.md,
// "seq lossy"). Closed-loop predictive transform coding with a codec profile
// (seq_profile.h); layer 0 from the model when the profile says so.
//
// Spec keys:
//   profile=ID    the profile (default: the only one loaded)
//   bits=B        rate control: average bits per element of the chunk
//   kl=D          quality budget: the largest step whose KL proxy is <= D;
//                 with bits=, the budget raises the rate when bits= would
//                 exceed it (the guardrail)
//   delta=X       a fixed global step (constant slope across chunks)
//   deadzone=R    rounding offset (encoder only; 0.5 = round to nearest)
//   krate=, vrate=  extra bits for keys / values (steps x 2^-rate)
//   lrate=a_b_...   extra bits per layer (one value per layer), added to those
//   fallback=lossless|none  what kl= does when the budget cannot be met
//                 below maxbits (default lossless: seq:lossless inside)
//   maxbits=M     bits per element above which kl= falls back (default 8)
//   streams=adaptive|lanes|lanes2  how group streams are coded: the
//                 profile's static model on 16 lanes that a GPU decodes in
//                 parallel (needs a profile with a static model; chunks never
//                 continue a parent) — lanes2 with the signed model (one rANS
//                 operation per symbol, the fastest GPU decode; the default
//                 when the profile has it), lanes with the magnitude model and
//                 a sign operation (the default with a version-2 profile) — or
//                 adaptive models on 8 lanes of one chain (chunks continue
//                 their parents; the only choice with a version-1 profile)
//   arith=float|int12  the dense stage's arithmetic (default float):
//                 int12 computes prediction, transform and reconstruction on
//                 12-bit fixed point with exact integer sums, which any
//                 summation order (tensor cores) reproduces bit for bit
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "builtin_codecs.h"
#include "bytes.h"
#include "engine_rope.h"
#include "seq_lossy_core.h"
#include "seqkv/codec/dtype.h"
#include "seqkv/codec/format.h"
#include "seqkv/codec/kv_model.h"
#include "seqkv/codec/seq_profile.h"

namespace seqkv {

namespace {

std::atomic<uint64_t> g_chunks{0}, g_raised{0}, g_fallback{0};
thread_local SeqEncodeInfo g_last_info;

}  // namespace

const SeqEncodeInfo& SeqLastEncodeInfo() { return g_last_info; }

SeqEncodeCounters GetSeqEncodeCounters() {
  return {g_chunks.load(), g_raised.load(), g_fallback.load()};
}

namespace internal {

namespace {

constexpr uint32_t kParamsSection = kSeqParamsSection;
constexpr uint32_t kLayer0Section = kSeqLayer0Section;
constexpr uint32_t kLayerSectionBase = kSeqLayerSectionBase;  // + layer
constexpr uint32_t kLosslessSectionBase = 1000;               // + seq:lossless section type
constexpr uint8_t kModeLossy = kSeqModeLossy, kModeLossless = kSeqModeLossless;
constexpr double kMinDelta = 1e-5, kMaxDelta = 1e3;

std::string FormatDouble(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}

class SeqLossyCodec final : public Codec, public SeqLossyEncoder {
 public:
  struct Options {
    double bits = 0, kl = 0, delta = 0, deadzone = 0.5, krate = 0, vrate = 0, maxbits = 8;
    std::vector<double> lrate;  // per layer, empty = 0
    bool fallback_lossless = true;
    SeqStreamCoding streams = SeqStreamCoding::kAdaptive;
    SeqArith arith = SeqArith::kFloat;
    bool lanes() const { return IsLaneCoding(streams); }
  };

  SeqLossyCodec(std::shared_ptr<const SeqProfile> profile, std::string profile_id,
                std::shared_ptr<const KvModel> model, Options opts, std::unique_ptr<Codec> lossless)
      : profile_(std::move(profile)), profile_id_(std::move(profile_id)), model_(std::move(model)),
        opts_(opts), lossless_(std::move(lossless)), tables_(internal::MakeSeqStaticTables(*profile_)),
        fixed_groups_(opts_.arith == SeqArith::kInt12 ? internal::SeqFixedGroups(*profile_)
                                                      : std::vector<internal::SeqFixedGroup>{}) {}

  CodecId id() const override { return CodecId::kSeq; }
  const SeqProfile& profile() const override { return *profile_; }
  SeqEncoderSettings Settings() const override {
    return {opts_.bits,  opts_.kl,    opts_.delta,   opts_.deadzone,         opts_.krate,  opts_.vrate,
            opts_.lrate, opts_.maxbits, opts_.fallback_lossless, opts_.streams, opts_.arith};
  }

  SeqLaneModel LaneModel() const { return SeqLaneModelOf(opts_.streams); }

  std::string Spec() const override {
    CodecSpec s;
    s.name = "seq";
    if (opts_.bits > 0) s.params["bits"] = FormatDouble(opts_.bits);
    if (opts_.kl > 0) s.params["kl"] = FormatDouble(opts_.kl);
    if (opts_.delta > 0) s.params["delta"] = FormatDouble(opts_.delta);
    s.params["deadzone"] = FormatDouble(opts_.deadzone);
    if (opts_.krate != 0) s.params["krate"] = FormatDouble(opts_.krate);
    if (opts_.vrate != 0) s.params["vrate"] = FormatDouble(opts_.vrate);
    if (!opts_.lrate.empty()) {
      std::string l;
      for (size_t i = 0; i < opts_.lrate.size(); ++i) l += (i ? "_" : "") + FormatDouble(opts_.lrate[i]);
      s.params["lrate"] = l;
    }
    if (opts_.kl > 0) {
      s.params["fallback"] = opts_.fallback_lossless ? "lossless" : "none";
      s.params["maxbits"] = FormatDouble(opts_.maxbits);
    }
    // Explicit whenever the profile offers both, so that the spec re-parses to this codec.
    if (profile_->has_static_model()) {
      s.params["streams"] = opts_.streams == SeqStreamCoding::kSplitLanes    ? "lanes3"
                            : opts_.streams == SeqStreamCoding::kSignedLanes ? "lanes2"
                            : opts_.streams == SeqStreamCoding::kLanes       ? "lanes"
                                                                             : "adaptive";
    }
    if (opts_.arith == SeqArith::kInt12) s.params["arith"] = "int12";
    s.params["profile"] = profile_id_;
    return s.ToString();
  }

  uint32_t ChunkFlags() const override {
    return kFlagNeedsProfile | (profile_->layer0_from_model ? kFlagNeedsModel : 0u);
  }

  Status Encode(const Chunk& chunk, std::vector<Section>* sections) const override {
    return EncodeImpl(chunk, nullptr, sections, &g_last_info, nullptr, nullptr);
  }

  Status EncodeWithInfo(const Chunk& chunk, std::vector<Section>* sections, SeqEncodeInfo* info,
                        Chunk* recon) const override {
    return EncodeImpl(chunk, nullptr, sections, info, recon, nullptr);
  }

  Status Decode(std::span<const SectionView> sections, Chunk* chunk) const override {
    return DecodeImpl(sections, nullptr, chunk, nullptr);
  }

  // Parent-conditioned chunks: every group's entropy coder starts from the
  // models (and last symbols) its parent chunk ended with.
  // Lane streams never continue a parent (their models are static).
  bool CanContinue(const ChunkContext& parent) const override {
    return !opts_.lanes() && parent.state != nullptr && parent.codec_key == ContextKey();
  }
  Status EncodeContinuing(const Chunk& chunk, const ChunkContext* parent, std::vector<Section>* sections,
                          ChunkContext* next) const override {
    return EncodeImpl(chunk, parent, sections, &g_last_info, nullptr, next);
  }
  Status DecodeContinuing(std::span<const SectionView> sections, const ChunkContext* parent, Chunk* chunk,
                          ChunkContext* next) const override {
    return DecodeImpl(sections, parent, chunk, next);
  }

 private:
  Status CheckShape(const Chunk& chunk) const {
    const SeqProfile& p = *profile_;
    if (chunk.shape.layers != p.layers || chunk.shape.kv_heads != p.kv_heads || chunk.shape.head_dim != p.head_dim) {
      return InvalidArgument("seq: chunk shape [" + std::to_string(chunk.shape.layers) + " layers, " +
                             std::to_string(chunk.shape.kv_heads) + " kv heads, head_dim " +
                             std::to_string(chunk.shape.head_dim) + "] does not match profile " + profile_id_);
    }
    if (chunk.shape.layers + kLayerSectionBase > kMaxSections) return InvalidArgument("seq: too many layers");
    return Status::Ok();
  }

  bool Layer0Exact(const Chunk& chunk) const {
    return profile_->layer0_from_model && model_ != nullptr &&
           (chunk.dtype == DType::kBF16 || chunk.dtype == DType::kFP16);
  }

  // The RoPE table of the chunk's positions, made once per encode or decode
  // and shared by everything in it that rotates keys (the model's layer-0
  // keys, the coding domain, the output): into *table, and a pointer to it,
  // when the chunk's keys are rotated and the call `needs` it; else null.
  static const RopeTable* ChunkRope(const Chunk& chunk, bool needs, RopeTable* table) {
    if (!needs || chunk.rope.style == RopeStyle::kNone) return nullptr;
    *table = MakeRopeTable(chunk.rope, chunk.shape.head_dim, chunk.first_position, chunk.shape.tokens);
    return table;
  }

  // The model's layer 0 in the chunk's dtype: k bits (after RoPE) and v bits, [H][T][d] each.
  // `rope` is ChunkRope's table (null: the chunk's keys are not rotated).
  Status ModelLayer0Bits(const Chunk& chunk, const RopeTable* rope, std::vector<uint16_t>* k,
                         std::vector<uint16_t>* v) const {
    const KvShape& s = chunk.shape;
    const size_t n = size_t{s.kv_heads} * s.tokens * s.head_dim;
    std::vector<float> kf(n), vf(n);
    SEQKV_RETURN_IF_ERROR(model_->Layer0(chunk.tokens, kf.data(), vf.data()));
    if (rope != nullptr) {
      for (uint32_t h = 0; h < s.kv_heads; ++h) {
        ApplyRope(*rope, chunk.rope.style, kf.data() + size_t{h} * s.tokens * s.head_dim);
      }
    }
    k->resize(n);
    v->resize(n);
    FromFloat(chunk.dtype, kf.data(), n, reinterpret_cast<uint8_t*>(k->data()));
    FromFloat(chunk.dtype, vf.data(), n, reinterpret_cast<uint8_t*>(v->data()));
    return Status::Ok();
  }

  // `rope` is ChunkRope's table for `out` (null: its keys are not rotated).
  void WriteOutput(const SeqLoopResult& loop, uint32_t first_layer, const RopeTable* rope, Chunk* out) const;

  std::string ContextKey() const { return "seq/" + profile_id_; }
  // Coder states [G] to start from: the parent's, or fresh.
  std::vector<SeqGroupState> StartStates(const ChunkContext* parent) const {
    if (parent != nullptr && CanContinue(*parent)) {
      return *static_cast<const std::vector<SeqGroupState>*>(parent->state.get());
    }
    return std::vector<SeqGroupState>(profile_->groups(), SeqGroupState(profile_->head_dim));
  }
  // What a child continues from: the states, or nothing after a lane chunk.
  void SetNext(ChunkContext* next, std::vector<SeqGroupState> states, bool lanes) const {
    if (next == nullptr) return;
    *next = ChunkContext{};
    if (lanes) return;
    next->codec_key = ContextKey();
    next->state = std::make_shared<const std::vector<SeqGroupState>>(std::move(states));
  }
  Status EncodeImpl(const Chunk& chunk, const ChunkContext* parent, std::vector<Section>* sections,
                    SeqEncodeInfo* info, Chunk* recon, ChunkContext* next) const;
  Status DecodeImpl(std::span<const SectionView> sections, const ChunkContext* parent, Chunk* chunk,
                    ChunkContext* next) const;

  std::shared_ptr<const SeqProfile> profile_;
  std::string profile_id_;
  std::shared_ptr<const KvModel> model_;
  Options opts_;
  std::unique_ptr<Codec> lossless_;
  SeqStaticTables tables_;  // the profile's static model (empty without one)
  // arith=int12: the profile's operands in fixed point, made once for every
  // loop (each rate-control trial is one); empty otherwise.
  std::vector<internal::SeqFixedGroup> fixed_groups_;
  // What the loop's params point at: fixed_groups_ where this codec made them.
  const std::vector<internal::SeqFixedGroup>* FixedGroupsFor(SeqArith arith) const {
    return arith == SeqArith::kInt12 && !fixed_groups_.empty() ? &fixed_groups_ : nullptr;
  }
};

uint16_t Load16(const std::vector<uint8_t>& bytes, size_t i) {
  return static_cast<uint16_t>(bytes[2 * i] | (bytes[2 * i + 1] << 8));
}

void SeqLossyCodec::WriteOutput(const SeqLoopResult& loop, uint32_t first_layer, const RopeTable* rope,
                                Chunk* out) const {
  const KvShape& s = out->shape;
  const size_t per_head = size_t{s.tokens} * s.head_dim;
  const size_t per_layer = s.kv_heads * per_head;
  const size_t esize = DTypeSize(out->dtype);
  // Pre-RoPE keys are rotated back to what the engine holds.
  const RopeTable* table = profile_->pre_rope_keys ? rope : nullptr;
  std::vector<float> buf(per_head);
  for (uint32_t l = first_layer; l < s.layers; ++l) {
    for (uint32_t kv = 0; kv < 2; ++kv) {
      for (uint32_t h = 0; h < s.kv_heads; ++h) {
        const float* src = loop.xhat.data() + (size_t{l} * 2 * s.kv_heads + kv * s.kv_heads + h) * per_head;
        std::copy(src, src + per_head, buf.begin());
        if (kv == 0 && table != nullptr) ApplyRope(*table, out->rope.style, buf.data());
        uint8_t* dst = (kv == 0 ? out->k.data() : out->v.data()) + (l * per_layer + h * per_head) * esize;
        FromFloat(out->dtype, buf.data(), per_head, dst);
      }
    }
  }
}

Status SeqLossyCodec::EncodeImpl(const Chunk& chunk, const ChunkContext* parent, std::vector<Section>* sections,
                                 SeqEncodeInfo* info, Chunk* recon, ChunkContext* next) const {
  SEQKV_RETURN_IF_ERROR(CheckShape(chunk));
  const SeqProfile& p = *profile_;
  if (p.layer0_from_model && model_ == nullptr) {
    return FailedPrecondition("seq: profile " + profile_id_ + " computes layer 0 from model " +
                              ModelIdHex(p.model_id) + ", which is not loaded (pass --model DIR)");
  }
  const KvShape& s = chunk.shape;
  const uint32_t T = s.tokens, H = s.kv_heads, d = s.head_dim, L = s.layers;
  const size_t per_group = size_t{T} * d;
  const size_t per_layer = 2 * H * per_group;
  const double elements = 2.0 * double(s.elements());
  *info = SeqEncodeInfo{};
  g_chunks.fetch_add(1, std::memory_order_relaxed);

  // One RoPE table for the chunk's positions, shared by the coding domain
  // (pre-RoPE keys), the model's layer-0 keys and the reconstruction.
  SeqLoopParams params;
  params.rho = static_cast<float>(opts_.deadzone);
  params.arith = opts_.arith;
  params.fixed_groups = FixedGroupsFor(params.arith);
  params.layer0_exact = Layer0Exact(chunk);
  RopeTable rope_table;
  const RopeTable* rope = ChunkRope(chunk, p.pre_rope_keys || params.layer0_exact, &rope_table);
  const std::vector<float> x = SeqCodingDomain(chunk, p.pre_rope_keys ? rope : nullptr);
  const bool continues = parent != nullptr && CanContinue(*parent);
  std::vector<SeqGroupState> states = StartStates(continues ? parent : nullptr);

  // Layer 0 from the model: the correction is the difference of the element bit
  // patterns (almost all zero), coded like symbols.
  std::vector<uint8_t> layer0_section;
  double layer0_bits = 0;
  if (params.layer0_exact) {
    std::vector<uint16_t> mk, mv;
    SEQKV_RETURN_IF_ERROR(ModelLayer0Bits(chunk, rope, &mk, &mv));
    std::vector<std::vector<uint8_t>> streams;
    std::vector<int32_t> corr(per_group);
    for (uint32_t kv = 0; kv < 2; ++kv) {
      const std::vector<uint8_t>& orig = kv == 0 ? chunk.k : chunk.v;
      const std::vector<uint16_t>& model = kv == 0 ? mk : mv;
      for (uint32_t h = 0; h < H; ++h) {
        for (size_t i = 0; i < per_group; ++i) {
          const size_t idx = size_t{h} * per_group + i;  // layer 0
          corr[i] = int32_t{Load16(orig, idx)} - int32_t{model[idx]};
          if (corr[i] != 0) ++info->layer0_corrections;
        }
        streams.push_back(SeqEncodeGroup(corr.data(), T, d, &states[SeqGroup(0, kv, h, H)]));
      }
    }
    layer0_section = PackSeqStreams(streams);
    layer0_bits = 8.0 * layer0_section.size();
    info->layer0_from_model = true;
  }
  const float* layer0 = params.layer0_exact ? x.data() : nullptr;
  const uint32_t first = params.layer0_exact ? 1 : 0;

  params.mult_code = SeqStepCodes(p, opts_.krate, opts_.vrate, opts_.lrate);

  SeqLoopResult loop;
  std::vector<int16_t> cls(d);
  auto trial = [&](double delta0, double* bits, double* proxy) {
    params.delta0 = static_cast<float>(delta0);
    SeqEncodeLoop(p, T, x.data(), layer0, params, &loop);
    ++info->trials;
    const int16_t step_class = SeqStepClass(params.delta0);
    uint64_t cost = 0;  // fixed point: exact in any order (the GPU encoder's sums agree)
    for (uint32_t g = SeqGroup(first, 0, 0, H); g < p.groups(); ++g) {
      const int32_t* qg = loop.q.data() + size_t{g} * per_group;
      if (opts_.lanes()) {
        SeqLaneClasses(p, g, step_class, params.mult_code[g], cls.data());
        cost += SeqEstimateLaneGroupCost(qg, T, d, tables_, cls.data(), nullptr, LaneModel());
      } else {
        cost += SeqEstimateGroupCost(qg, T, d, &states[g]);
      }
    }
    *bits = SeqTrialBits(layer0_bits, p, L - first, cost) / elements;
    *proxy = SeqProxy(p, loop.sse, T);
  };

  // Rate control (SeqRateSearch): typically 3-6 trial encodes.
  SeqLoopResult chosen;
  SeqRateSearch search(opts_.bits, opts_.kl, opts_.delta, opts_.maxbits, opts_.streams);
  while (!search.done()) {
    double b, pr;
    trial(search.delta(), &b, &pr);
    if (search.Report(b, pr)) chosen = loop;
  }
  const double chosen_delta = search.chosen_delta(), bits = search.bits(), proxy = search.proxy();
  const bool lossless = search.lossless();
  if (search.guardrail_raised()) info->guardrail_raised = true;
  if (lossless && !opts_.fallback_lossless) {
    return FailedPrecondition("seq: the kl budget " + FormatDouble(opts_.kl) + " cannot be met below maxbits=" +
                              FormatDouble(opts_.maxbits) + " and fallback=none");
  }
  params.delta0 = static_cast<float>(chosen_delta);

  if (lossless) {
    g_fallback.fetch_add(1, std::memory_order_relaxed);
    info->lossless_fallback = true;
    info->guardrail_raised = false;
    std::vector<uint8_t> params_bytes;
    ByteWriter w(&params_bytes);
    w.U8(kModeLossless);
    sections->push_back({kParamsSection, std::move(params_bytes)});
    std::vector<Section> inner;
    SEQKV_RETURN_IF_ERROR(lossless_->Encode(chunk, &inner));
    for (Section& sec : inner) sections->push_back({kLosslessSectionBase + sec.type, std::move(sec.data)});
    if (recon) *recon = chunk;
    if (next != nullptr) *next = ChunkContext{};  // the child starts fresh
    return Status::Ok();
  }
  if (info->guardrail_raised) g_raised.fetch_add(1, std::memory_order_relaxed);

  info->delta0 = params.delta0;
  info->proxy = p.has_sensitivity ? proxy : 0.0;  // without sensitivities the proxy means nothing
  info->estimated_bits = bits;
  info->layer_bytes.assign(L, 0);

  SeqLossyParams table;
  table.loop = params;
  table.parent_hash = continues ? parent->chunk_hash : 0;
  table.streams = opts_.streams;
  if (opts_.lanes()) {
    table.step_class = SeqStepClass(params.delta0);
  }
  sections->push_back({kParamsSection, PackSeqLossyParams(table, static_cast<float>(proxy))});
  if (params.layer0_exact) {
    info->layer_bytes[0] = layer0_section.size();
    sections->push_back({kLayer0Section, std::move(layer0_section)});
  }
  for (uint32_t l = first; l < L; ++l) {
    std::vector<std::vector<uint8_t>> streams;
    for (uint32_t kv = 0; kv < 2; ++kv) {
      for (uint32_t h = 0; h < H; ++h) {
        const uint32_t g = SeqGroup(l, kv, h, H);
        const int32_t* qg = chosen.q.data() + size_t{g} * per_group;
        if (opts_.lanes()) {
          SeqLaneClasses(p, g, table.step_class, params.mult_code[g], cls.data());
          streams.push_back(SeqEncodeLaneGroup(qg, T, d, tables_, cls.data(), LaneModel()));
        } else {
          streams.push_back(SeqEncodeGroup(qg, T, d, &states[g]));
        }
      }
    }
    std::vector<uint8_t> packed = PackSeqStreams(streams);
    info->layer_bytes[l] = packed.size();
    sections->push_back({kLayerSectionBase + l, std::move(packed)});
  }
  if (recon) {
    *recon = chunk;
    WriteOutput(chosen, first, rope, recon);
  }
  SetNext(next, std::move(states), opts_.lanes());
  (void)per_layer;
  return Status::Ok();
}

Status SeqLossyCodec::DecodeImpl(std::span<const SectionView> sections, const ChunkContext* parent, Chunk* chunk,
                                 ChunkContext* next) const {
  if (sections.empty() || sections[0].type != kParamsSection) return DataLoss("seq: missing parameters section");
  ByteReader r(sections[0].data);
  const uint8_t mode = r.U8();
  if (!r.ok()) return DataLoss("seq: truncated parameters");
  if (mode == kModeLossless) {
    if (r.remaining() != 0) return DataLoss("seq: trailing bytes in parameters");
    std::vector<SectionView> inner;
    for (size_t i = 1; i < sections.size(); ++i) {
      if (sections[i].type <= kLosslessSectionBase) return DataLoss("seq: unexpected section in lossless mode");
      inner.push_back({sections[i].type - kLosslessSectionBase, sections[i].data});
    }
    if (next != nullptr) *next = ChunkContext{};
    return lossless_->Decode(inner, chunk);
  }
  if (mode != kModeLossy) return DataLoss("seq: unknown mode");
  const Status shape = CheckShape(*chunk);
  if (!shape.ok()) return DataLoss(std::string(shape.message()));
  const SeqProfile& p = *profile_;
  const KvShape& s = chunk->shape;
  const uint32_t T = s.tokens, H = s.kv_heads, d = s.head_dim, L = s.layers;
  const size_t per_group = size_t{T} * d;

  SEQKV_ASSIGN_OR_RETURN(SeqLossyParams header, ParseSeqLossyParams(sections[0].data.subspan(1), p));
  SeqLoopParams params = std::move(header.loop);
  params.fixed_groups = FixedGroupsFor(params.arith);
  const uint64_t parent_hash = header.parent_hash;
  const bool lanes = IsLaneCoding(header.streams);
  const SeqLaneModel lane_model = SeqLaneModelOf(header.streams);
  if (parent_hash != 0 && (parent == nullptr || !CanContinue(*parent))) {
    return FailedPrecondition("seq: chunk continues a parent chunk; decode it with its parent's context");
  }
  if (parent_hash != 0 && parent->chunk_hash != parent_hash) {
    return FailedPrecondition("seq: chunk continues another parent chunk than the one given");
  }
  std::vector<SeqGroupState> states = StartStates(parent_hash != 0 ? parent : nullptr);
  if (params.layer0_exact && model_ == nullptr) {
    return FailedPrecondition("seq: chunk needs the model " + ModelIdHex(p.model_id) + " (pass --model DIR)");
  }
  if (params.layer0_exact && chunk->dtype != DType::kBF16 && chunk->dtype != DType::kFP16) {
    return DataLoss("seq: layer 0 from the model needs a 16-bit dtype");
  }
  const uint32_t first = params.layer0_exact ? 1 : 0;
  const size_t expected = 1 + (params.layer0_exact ? 1 : 0) + (L - first);
  if (sections.size() != expected) return DataLoss("seq: wrong number of sections");

  chunk->k.assign(chunk->TensorBytes(), 0);
  chunk->v.assign(chunk->TensorBytes(), 0);
  // Layer 0 from the model, its coding domain and the output all need the
  // same table when the keys are rotated: made here, once.
  RopeTable rope_table;
  const RopeTable* rope = ChunkRope(*chunk, params.layer0_exact || p.pre_rope_keys, &rope_table);
  size_t at = 1;
  std::vector<float> layer0;
  if (params.layer0_exact) {
    if (sections[at].type != kLayer0Section) return DataLoss("seq: missing layer-0 section");
    SEQKV_ASSIGN_OR_RETURN(auto streams, UnpackSeqStreams(sections[at].data, 2 * H));
    ++at;
    std::vector<uint16_t> mk, mv;
    SEQKV_RETURN_IF_ERROR(ModelLayer0Bits(*chunk, rope, &mk, &mv));
    std::vector<int32_t> corr(per_group);
    for (uint32_t kv = 0; kv < 2; ++kv) {
      std::vector<uint8_t>& out = kv == 0 ? chunk->k : chunk->v;
      const std::vector<uint16_t>& model = kv == 0 ? mk : mv;
      for (uint32_t h = 0; h < H; ++h) {
        SEQKV_RETURN_IF_ERROR(SeqDecodeGroup(streams[kv * H + h], T, d, corr.data(), &states[SeqGroup(0, kv, h, H)]));
        for (size_t i = 0; i < per_group; ++i) {
          const size_t idx = size_t{h} * per_group + i;
          const int32_t v = int32_t{model[idx]} + corr[i];
          if (v < 0 || v > 0xFFFF) return DataLoss("seq: layer-0 correction out of range");
          out[2 * idx] = static_cast<uint8_t>(v);
          out[2 * idx + 1] = static_cast<uint8_t>(v >> 8);
        }
      }
    }
    layer0 = SeqCodingDomainLayer(*chunk, 0, p.pre_rope_keys ? rope : nullptr);
  }
  SeqLoopResult loop;
  loop.q.assign(size_t{p.groups()} * per_group, 0);
  std::vector<int16_t> cls(d);
  for (uint32_t l = first; l < L; ++l, ++at) {
    if (sections[at].type != kLayerSectionBase + l) return DataLoss("seq: unexpected section type");
    SEQKV_ASSIGN_OR_RETURN(auto streams, UnpackSeqStreams(sections[at].data, 2 * H));
    for (uint32_t kv = 0; kv < 2; ++kv) {
      for (uint32_t h = 0; h < H; ++h) {
        const uint32_t g = SeqGroup(l, kv, h, H);
        int32_t* qg = loop.q.data() + size_t{g} * per_group;
        if (lanes) {
          SeqLaneClasses(p, g, header.step_class, params.mult_code[g], cls.data());
          SEQKV_RETURN_IF_ERROR(SeqDecodeLaneGroup(streams[kv * H + h], T, d, tables_, cls.data(), qg, lane_model));
        } else {
          SEQKV_RETURN_IF_ERROR(SeqDecodeGroup(streams[kv * H + h], T, d, qg, &states[g]));
        }
      }
    }
  }
  SeqDecodeLoop(p, T, params.layer0_exact ? layer0.data() : nullptr, params, &loop);
  WriteOutput(loop, first, rope, chunk);
  SetNext(next, std::move(states), lanes);
  return Status::Ok();
}

}  // namespace

Result<std::unique_ptr<Codec>> MakeSeqLossyCodec(const CodecSpec& spec) {
  SEQKV_RETURN_IF_ERROR(SpecCheckKeys(
      spec,
      {"profile", "bits", "kl", "delta", "deadzone", "krate", "vrate", "lrate", "fallback", "maxbits", "lossless",
       "streams", "arith"}));
  SeqLossyCodec::Options o;
  SEQKV_ASSIGN_OR_RETURN(o.bits, SpecDouble(spec, "bits", 0, 0, 16));
  SEQKV_ASSIGN_OR_RETURN(o.kl, SpecDouble(spec, "kl", 0, 0, 100));
  SEQKV_ASSIGN_OR_RETURN(o.delta, SpecDouble(spec, "delta", 0, 0, kMaxDelta));
  SEQKV_ASSIGN_OR_RETURN(o.deadzone, SpecDouble(spec, "deadzone", 0.5, 0, 0.5));
  SEQKV_ASSIGN_OR_RETURN(o.krate, SpecDouble(spec, "krate", 0, -7, 7));
  SEQKV_ASSIGN_OR_RETURN(o.vrate, SpecDouble(spec, "vrate", 0, -7, 7));
  SEQKV_ASSIGN_OR_RETURN(o.maxbits, SpecDouble(spec, "maxbits", 8, 0.01, 16));
  auto fb = spec.params.find("fallback");
  if (fb != spec.params.end()) {
    if (fb->second != "lossless" && fb->second != "none") {
      return InvalidArgument("seq: fallback must be lossless or none");
    }
    o.fallback_lossless = fb->second == "lossless";
  }
  auto streams = spec.params.find("streams");
  if (streams != spec.params.end() && streams->second != "adaptive" && streams->second != "lanes" &&
      streams->second != "lanes2" && streams->second != "lanes3") {
    return InvalidArgument("seq: streams must be adaptive, lanes, lanes2 or lanes3");
  }
  auto arith = spec.params.find("arith");
  if (arith != spec.params.end()) {
    if (arith->second != "float" && arith->second != "int12") {
      return InvalidArgument("seq: arith must be float or int12");
    }
    o.arith = arith->second == "int12" ? SeqArith::kInt12 : SeqArith::kFloat;
  }
  if (o.delta > 0 && (o.bits > 0 || o.kl > 0)) return InvalidArgument("seq: delta= excludes bits= and kl=");
  if (o.delta > 0 && o.delta < kMinDelta) return InvalidArgument("seq: delta must be >= 1e-5");
  if (o.bits == 0 && o.kl == 0 && o.delta == 0) {
    return InvalidArgument("seq: give bits=B (a rate), kl=D (a quality budget), delta=X (a step) or lossless");
  }
  std::shared_ptr<const SeqProfile> profile;
  auto pid = spec.params.find("profile");
  if (pid != spec.params.end()) {
    SEQKV_ASSIGN_OR_RETURN(profile, SeqResources::Default().Profile(pid->second));
  } else {
    SEQKV_ASSIGN_OR_RETURN(profile, SeqResources::Default().OnlyProfile());
  }
  auto lr = spec.params.find("lrate");
  if (lr != spec.params.end()) {
    std::string item;
    auto flush = [&]() -> Status {
      char* end = nullptr;
      const double v = std::strtod(item.c_str(), &end);
      if (item.empty() || end != item.c_str() + item.size() || !(v >= -7 && v <= 7)) {
        return InvalidArgument("seq: lrate takes one number in [-7, 7] per layer, separated by '_'");
      }
      o.lrate.push_back(v);
      item.clear();
      return Status::Ok();
    };
    for (char c : lr->second) {
      if (c == '_') {
        SEQKV_RETURN_IF_ERROR(flush());
      } else {
        item += c;
      }
    }
    SEQKV_RETURN_IF_ERROR(flush());
    if (o.lrate.size() != profile->layers) {
      return InvalidArgument("seq: lrate has " + std::to_string(o.lrate.size()) + " values, the profile " +
                             std::to_string(profile->layers) + " layers");
    }
  }
  // Lane streams by default where the profile can code them.
  // Signed lanes where the profile has their model, else lanes where it has a static one.
  if (streams != spec.params.end()) {
    o.streams = streams->second == "lanes3"   ? SeqStreamCoding::kSplitLanes
                : streams->second == "lanes2" ? SeqStreamCoding::kSignedLanes
                : streams->second == "lanes"  ? SeqStreamCoding::kLanes
                                              : SeqStreamCoding::kAdaptive;
  } else {
    o.streams = profile->has_signed_model() ? SeqStreamCoding::kSignedLanes
                : profile->has_static_model() ? SeqStreamCoding::kLanes
                                              : SeqStreamCoding::kAdaptive;
  }
  if (o.lanes() && !profile->has_static_model()) {
    return FailedPrecondition("seq: streams=" + streams->second +
                              " needs a profile with a static model (calibrate it again with this version; "
                              "profile " + profile->Id() + " has none)");
  }
  if (IsSignedLaneCoding(o.streams) && !profile->has_signed_model()) {
    return FailedPrecondition("seq: streams=" + streams->second +
                              " needs a profile with a signed model (calibrate it again with this version; "
                              "profile " + profile->Id() + " has only the magnitude model)");
  }
  if (o.arith == SeqArith::kInt12 && profile->head_dim > internal::kSeqFixedMaxDim) {
    return FailedPrecondition("seq: arith=int12 needs head_dim <= 512 (profile " + profile->Id() + " has " +
                              std::to_string(profile->head_dim) + ")");
  }
  if (o.kl > 0 && !profile->has_sensitivity) {
    return FailedPrecondition("seq: kl= needs a profile calibrated with sensitivities (--sensitivity FILE)");
  }
  std::shared_ptr<const KvModel> model;
  if (profile->layer0_from_model) {
    auto m = SeqResources::Default().Model(profile->model_id);
    if (m.ok()) model = *m;  // without it, Encode and the Decode of a chunk that needs it fail clearly
  }
  CodecSpec lossless_spec;
  lossless_spec.name = "seq";
  lossless_spec.params = {{"lossless", "1"}};
  SEQKV_ASSIGN_OR_RETURN(auto lossless, MakeSeqLosslessCodec(lossless_spec));
  return std::unique_ptr<Codec>(
      new SeqLossyCodec(profile, profile->Id(), std::move(model), o, std::move(lossless)));
}

}  // namespace internal

}  // namespace seqkv
