// SeqProfile: validation, serialization, ids; the side-information registry;
// the sensitivity JSON reader. Calibration is in seq_calibrate.cc.
//
// Profile file (little-endian):
//   u32 magic "SQKP"  u16 version  u16 reserved (0)
//   u32 layers  u32 kv_heads  u32 head_dim
//   u8 pre_rope_keys  u8 layer0_from_model  u8 inputs  u8 has_sensitivity
//   16 bytes model id   f32 proxy_scale   u32 calib_tokens
//   4 arrays (predictor, basis, step_scale, sensitivity): u64 count, f32 x count
//   version 2 and 3: u64 count, i16 static_scale x count; u64 count, u16 static_freq x count
//   version 3 only: u64 count, u16 signed_freq x count
//   u64 XXH3-64 of every byte before it (the profile's id)
#include "seqkv/codec/seq_profile.h"

#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>

#include "bytes.h"
#include "checksum.h"
#include "seq_lanes.h"
#include "seq_lossy_core.h"
#include "seqkv/codec/kv_model.h"
#include "seqkv/codec/safetensors.h"

namespace seqkv {

namespace {

using internal::ByteReader;
using internal::ByteWriter;

std::string Hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

void PutFloats(ByteWriter* w, const std::vector<float>& v) {
  w->U64(v.size());
  for (float f : v) {
    uint32_t bits;
    std::memcpy(&bits, &f, 4);
    w->U32(bits);
  }
}

bool GetFloats(ByteReader* r, uint64_t expected, std::vector<float>* v) {
  const uint64_t n = r->U64();
  if (!r->ok() || n != expected || n > r->remaining() / 4) return false;
  v->resize(n);
  for (uint64_t i = 0; i < n; ++i) {
    uint32_t bits = r->U32();
    std::memcpy(&(*v)[i], &bits, 4);
  }
  return r->ok();
}

bool AllFinite(const std::vector<float>& v) {
  for (float f : v) {
    if (!std::isfinite(f)) return false;
  }
  return true;
}

}  // namespace

std::string_view SeqInputsName(SeqInputs inputs) {
  switch (inputs) {
    case SeqInputs::kMean: return "mean";
    case SeqInputs::kSameHead: return "same";
    case SeqInputs::kAllHeads: return "all";
  }
  return "?";
}

Result<SeqInputs> ParseSeqInputs(std::string_view name) {
  if (name == "mean") return SeqInputs::kMean;
  if (name == "same") return SeqInputs::kSameHead;
  if (name == "all") return SeqInputs::kAllHeads;
  return InvalidArgument("predictor inputs must be mean, same or all (got '" + std::string(name) + "')");
}

uint32_t SeqProfile::features() const {
  switch (inputs) {
    case SeqInputs::kMean: return 1;
    case SeqInputs::kSameHead: return 2 * head_dim + 1;
    case SeqInputs::kAllHeads: return 2 * kv_heads * head_dim + 1;
  }
  return 1;
}

Status SeqProfile::Validate() const {
  if (layers == 0 || layers > kMaxLayers || kv_heads == 0 || kv_heads > kMaxKvHeads || head_dim == 0 ||
      head_dim > 1024) {
    return InvalidArgument("seq profile: bad shape");
  }
  if (static_cast<uint8_t>(inputs) > 2) return InvalidArgument("seq profile: bad predictor inputs");
  const uint64_t g = groups(), d = head_dim;
  if (predictor.size() != g * features() * d || basis.size() != g * d * d || step_scale.size() != g * d ||
      sensitivity.size() != g) {
    return InvalidArgument("seq profile: array sizes do not match the shape");
  }
  if (!AllFinite(predictor) || !AllFinite(basis)) return InvalidArgument("seq profile: non-finite weights");
  for (float s : step_scale) {
    if (!(s > 0) || !std::isfinite(s)) return InvalidArgument("seq profile: step scales must be positive");
  }
  for (float s : sensitivity) {
    if (!(s > 0) || !std::isfinite(s)) return InvalidArgument("seq profile: sensitivities must be positive");
  }
  if (!(proxy_scale > 0) || !std::isfinite(proxy_scale)) return InvalidArgument("seq profile: bad proxy scale");
  if (!static_freq.empty() || !static_scale.empty()) {
    constexpr size_t kRows = size_t{internal::kSeqStaticClasses} * internal::kSeqLaneContexts;
    if (static_scale.size() != g * d || static_freq.size() != kRows * internal::kSeqLaneSymbols) {
      return InvalidArgument("seq profile: static model sizes do not match the shape");
    }
    for (size_t r = 0; r < kRows; ++r) {
      uint32_t sum = 0;
      for (int k = 0; k < internal::kSeqLaneSymbols; ++k) {
        const uint16_t f = static_freq[r * internal::kSeqLaneSymbols + k];
        if (f == 0) return InvalidArgument("seq profile: a static frequency is zero");
        sum += f;
      }
      if (sum != (1u << internal::kSeqLaneScaleBits)) return InvalidArgument("seq profile: a static row does not sum to 2^15");
    }
  }
  if (!signed_freq.empty()) {
    constexpr size_t kRows = internal::kSeqStaticClasses, kN = internal::kSeqSignedSymbols;
    if (static_freq.empty() || signed_freq.size() != kRows * kN) {
      return InvalidArgument("seq profile: signed model sizes do not match (or no static model)");
    }
    for (size_t r = 0; r < kRows; ++r) {
      uint32_t sum = 0;
      for (size_t k = 0; k < kN; ++k) {
        const uint16_t f = signed_freq[r * kN + k];
        if (f == 0) return InvalidArgument("seq profile: a signed frequency is zero");
        sum += f;
      }
      if (sum != (1u << internal::kSeqLaneScaleBits)) return InvalidArgument("seq profile: a signed row does not sum to 2^15");
    }
  }
  return Status::Ok();
}

std::vector<uint8_t> SeqProfile::Serialize() const {
  std::vector<uint8_t> out;
  ByteWriter w(&out);
  w.U32(kSeqProfileMagic);
  w.U16(has_signed_model() ? kSeqProfileVersionSigned
                            : (has_static_model() ? kSeqProfileVersionStatic : kSeqProfileVersion));
  w.U16(0);
  w.U32(layers);
  w.U32(kv_heads);
  w.U32(head_dim);
  w.U8(pre_rope_keys ? 1 : 0);
  w.U8(layer0_from_model ? 1 : 0);
  w.U8(static_cast<uint8_t>(inputs));
  w.U8(has_sensitivity ? 1 : 0);
  w.Bytes(model_id);
  uint32_t bits;
  std::memcpy(&bits, &proxy_scale, 4);
  w.U32(bits);
  w.U32(calib_tokens);
  PutFloats(&w, predictor);
  PutFloats(&w, basis);
  PutFloats(&w, step_scale);
  PutFloats(&w, sensitivity);
  if (has_static_model()) {
    w.U64(static_scale.size());
    for (int16_t v : static_scale) w.U16(static_cast<uint16_t>(v));
    w.U64(static_freq.size());
    for (uint16_t v : static_freq) w.U16(v);
  }
  if (has_signed_model()) {
    w.U64(signed_freq.size());
    for (uint16_t v : signed_freq) w.U16(v);
  }
  w.U64(internal::Xxh3(out));
  return out;
}

std::string SeqProfile::Id() const {
  std::vector<uint8_t> bytes = Serialize();
  uint64_t id = 0;
  for (int b = 0; b < 8; ++b) id |= uint64_t{bytes[bytes.size() - 8 + b]} << (8 * b);
  return Hex64(id);
}

Result<SeqProfile> SeqProfile::Parse(std::span<const uint8_t> bytes) {
  if (bytes.size() < 8) return DataLoss("seq profile: file too short");
  const auto body = bytes.first(bytes.size() - 8);
  ByteReader tail(bytes.last(8));
  if (tail.U64() != internal::Xxh3(body)) return DataLoss("seq profile: checksum mismatch (corrupt file)");
  ByteReader r(body);
  if (r.U32() != kSeqProfileMagic) return DataLoss("seq profile: not a profile (bad magic)");
  const uint16_t version = r.U16();
  if (version != kSeqProfileVersion && version != kSeqProfileVersionStatic && version != kSeqProfileVersionSigned) {
    return DataLoss("seq profile: unsupported version " + std::to_string(version));
  }
  r.U16();
  SeqProfile p;
  p.layers = r.U32();
  p.kv_heads = r.U32();
  p.head_dim = r.U32();
  p.pre_rope_keys = r.U8() != 0;
  p.layer0_from_model = r.U8() != 0;
  const uint8_t inputs = r.U8();
  p.has_sensitivity = r.U8() != 0;
  auto id = r.Bytes(16);
  if (!r.ok()) return DataLoss("seq profile: truncated header");
  std::memcpy(p.model_id.data(), id.data(), 16);
  uint32_t bits = r.U32();
  std::memcpy(&p.proxy_scale, &bits, 4);
  p.calib_tokens = r.U32();
  if (inputs > 2) return DataLoss("seq profile: bad predictor inputs");
  p.inputs = static_cast<SeqInputs>(inputs);
  if (!r.ok() || p.layers == 0 || p.layers > kMaxLayers || p.kv_heads == 0 || p.kv_heads > kMaxKvHeads ||
      p.head_dim == 0 || p.head_dim > 1024) {
    return DataLoss("seq profile: bad shape");
  }
  const uint64_t g = p.groups(), d = p.head_dim;
  if (!GetFloats(&r, g * p.features() * d, &p.predictor) || !GetFloats(&r, g * d * d, &p.basis) ||
      !GetFloats(&r, g * d, &p.step_scale) || !GetFloats(&r, g, &p.sensitivity)) {
    return DataLoss("seq profile: arrays truncated or of the wrong size");
  }
  if (version >= kSeqProfileVersionStatic) {
    constexpr uint64_t kFreqs =
        uint64_t{internal::kSeqStaticClasses} * internal::kSeqLaneContexts * internal::kSeqLaneSymbols;
    uint64_t n = r.U64();
    if (!r.ok() || n != g * d || n > r.remaining() / 2) return DataLoss("seq profile: static model truncated");
    p.static_scale.resize(n);
    for (auto& v : p.static_scale) v = static_cast<int16_t>(r.U16());
    n = r.U64();
    if (!r.ok() || n != kFreqs || n > r.remaining() / 2) return DataLoss("seq profile: static model truncated");
    p.static_freq.resize(n);
    for (auto& v : p.static_freq) v = r.U16();
    if (!r.ok()) return DataLoss("seq profile: static model truncated");
  }
  if (version == kSeqProfileVersionSigned) {
    const uint64_t n = r.U64();
    if (!r.ok() || n != uint64_t{internal::kSeqStaticClasses} * internal::kSeqSignedSymbols || n > r.remaining() / 2) {
      return DataLoss("seq profile: signed model truncated");
    }
    p.signed_freq.resize(n);
    for (auto& v : p.signed_freq) v = r.U16();
    if (!r.ok()) return DataLoss("seq profile: signed model truncated");
  }
  if (r.remaining() != 0) return DataLoss("seq profile: trailing bytes");
  Status st = p.Validate();
  if (!st.ok()) return DataLoss(std::string(st.message()));
  return p;
}

Result<SeqProfile> SeqProfile::Load(const std::string& path) {
  SEQKV_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFileBytes(path));
  auto p = Parse(bytes);
  if (!p.ok()) return Status(p.status().code(), path + ": " + std::string(p.status().message()));
  return p;
}

Status SeqProfile::Save(const std::string& path) const {
  SEQKV_RETURN_IF_ERROR(Validate());
  return WriteFileBytes(path, Serialize());
}

SeqProfile::Size SeqProfile::SizeBytes() const {
  Size s;
  s.predictor = predictor.size() * 4;
  s.basis = basis.size() * 4;
  s.steps = (step_scale.size() + sensitivity.size()) * 4;
  s.static_model = has_static_model() ? 16 + 2 * (static_scale.size() + static_freq.size()) : 0;
  if (has_signed_model()) s.static_model += 8 + 2 * signed_freq.size();
  s.total = Serialize().size();
  return s;
}

Result<std::vector<double>> ParseSensitivityJson(const std::string& text, uint32_t layers, uint32_t kv_heads,
                                                 uint32_t head_dim) {
  nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return InvalidArgument("sensitivity file: not a JSON object");
  if (j.value("format", "") != "seqkv-sensitivity/1") {
    return InvalidArgument("sensitivity file: format is not seqkv-sensitivity/1");
  }
  if (j.value("layers", 0u) != layers || j.value("kv_heads", 0u) != kv_heads ||
      j.value("head_dim", 0u) != head_dim) {
    return InvalidArgument("sensitivity file: shape does not match the chunks (" +
                           std::to_string(j.value("layers", 0u)) + " layers, " +
                           std::to_string(j.value("kv_heads", 0u)) + " kv heads, head_dim " +
                           std::to_string(j.value("head_dim", 0u)) + ")");
  }
  if (j.value("key_domain", "") != "pre_rope") {
    return InvalidArgument("sensitivity file: key_domain must be pre_rope");
  }
  const auto& s = j["sensitivity"];
  std::vector<double> out;
  if (!s.is_array() || s.size() != layers) return InvalidArgument("sensitivity file: bad 'sensitivity' array");
  for (const auto& layer : s) {
    if (!layer.is_array() || layer.size() != 2) return InvalidArgument("sensitivity file: bad layer entry");
    for (const auto& kv : layer) {
      if (!kv.is_array() || kv.size() != kv_heads) return InvalidArgument("sensitivity file: bad K/V entry");
      for (const auto& v : kv) {
        if (!v.is_number() || !(v.get<double>() > 0) || !std::isfinite(v.get<double>())) {
          return InvalidArgument("sensitivity file: sensitivities must be positive numbers");
        }
        out.push_back(v.get<double>());
      }
    }
  }
  return out;
}

// ---------------------------------------------------------------- resources

struct SeqResources::Impl {
  mutable std::mutex mu;
  std::map<std::string, std::shared_ptr<const SeqProfile>> profiles;
  std::map<std::array<uint8_t, 16>, std::shared_ptr<const KvModel>> models;
};

std::shared_ptr<SeqResources::Impl> SeqResources::MakeImpl() { return std::make_shared<Impl>(); }

SeqResources& SeqResources::Default() {
  static SeqResources* r = new SeqResources();
  return *r;
}

void SeqResources::AddProfile(std::shared_ptr<const SeqProfile> profile) {
  std::string id = profile->Id();
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->profiles[id] = std::move(profile);
}

void SeqResources::AddModel(std::shared_ptr<const KvModel> model) {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->models[model->id()] = std::move(model);
}

Result<std::shared_ptr<const SeqProfile>> SeqResources::Profile(const std::string& id) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->profiles.find(id);
  if (it == impl_->profiles.end()) {
    return FailedPrecondition("seq: codec profile " + id + " is not loaded (pass --profile FILE)");
  }
  return it->second;
}

Result<std::shared_ptr<const KvModel>> SeqResources::Model(const std::array<uint8_t, 16>& id) const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  auto it = impl_->models.find(id);
  if (it == impl_->models.end()) {
    return FailedPrecondition("seq: the profile needs model " + internal::ModelIdHex(id) +
                              " and it is not loaded (pass --model DIR)");
  }
  return it->second;
}

Result<std::shared_ptr<const SeqProfile>> SeqResources::OnlyProfile() const {
  std::lock_guard<std::mutex> lock(impl_->mu);
  if (impl_->profiles.size() == 1) return impl_->profiles.begin()->second;
  if (impl_->profiles.empty()) {
    return InvalidArgument("seq: lossy modes need a codec profile (pass --profile FILE; make one with "
                           "`seqkvctl codec calibrate`)");
  }
  return InvalidArgument("seq: several profiles are loaded; name one with profile=ID in the spec");
}

void SeqResources::Clear() {
  std::lock_guard<std::mutex> lock(impl_->mu);
  impl_->profiles.clear();
  impl_->models.clear();
}

}  // namespace seqkv
