// Calibration of a seq codec profile from sample chunks (seq_profile.h).
//
// Per group g = (layer, K/V, head), in the coding domain (keys before RoPE):
//   predictor  ridge regression of the group on the previous layer's values
//              (open loop: the originals), bias last; layer 0 and inputs=mean
//              get the mean only;
//   basis      eigenvectors of the prediction residual's covariance (KLT),
//              strongest first;
//   steps      1 / sqrt(s_g / geomean(s)): every quantizer at the same slope
//              of the sensitivity-weighted squared error (the KL proxy).
// Fitting is double precision; the profile stores float32, and encoder and
// decoder only ever use the stored float32 numbers.
#include <algorithm>
#include <chrono>
#include <cmath>

#include "linalg.h"
#include "seq_lanes.h"
#include "seq_lossy_core.h"
#include "seqkv/codec/kv_model.h"
#include "seqkv/codec/seq_profile.h"

namespace seqkv {

namespace {

using internal::SeqGroup;

// Feature rows [T][F] of one chunk for the predictor of (layer, head), from
// the chunk's coding domain x [L][2][H][T][d].
std::vector<float> FeatureRows(const float* prev /*[2][H][T][d]*/, uint32_t H, uint32_t T, uint32_t d,
                               SeqInputs inputs, uint32_t head) {
  const uint32_t F = inputs == SeqInputs::kAllHeads ? 2 * H * d + 1 : 2 * d + 1;
  std::vector<float> f(size_t{T} * F);
  for (uint32_t t = 0; t < T; ++t) {
    float* row = f.data() + size_t{t} * F;
    uint32_t col = 0;
    for (uint32_t kv = 0; kv < 2; ++kv) {
      for (uint32_t h = 0; h < H; ++h) {
        if (inputs == SeqInputs::kSameHead && h != head) continue;
        const float* src = prev + ((size_t{kv} * H + h) * T + t) * d;
        for (uint32_t j = 0; j < d; ++j) row[col++] = src[j];
      }
    }
    row[F - 1] = 1.0f;
  }
  return f;
}

}  // namespace

Status FitSeqStaticModel(const std::vector<Chunk>& chunks, SeqProfile* profile) {
  SeqProfile& p = *profile;
  const uint32_t G = p.groups(), d = p.head_dim, H = p.kv_heads;
  if (chunks.empty()) return InvalidArgument("calibrate: no chunks for the static model");
  // Layer 0 is exact (not coded) when the model gives it: its groups carry no symbols.
  const uint32_t first_group = p.layer0_from_model ? SeqGroup(1, 0, 0, H) : 0;
  auto loop = [&](const Chunk& c, float delta, internal::SeqLoopResult* out) {
    internal::SeqLoopParams params;
    params.delta0 = delta;
    params.mult_code.assign(G, 128);
    params.layer0_exact = p.layer0_from_model;
    const std::vector<float> x = internal::SeqCodingDomain(c, p.pre_rope_keys);
    internal::SeqEncodeLoop(p, c.shape.tokens, x.data(), p.layer0_from_model ? x.data() : nullptr, params, out);
  };
  for (const Chunk& c : chunks) {
    if (c.shape.layers != p.layers || c.shape.kv_heads != H || c.shape.head_dim != d) {
      return InvalidArgument("calibrate: chunk shapes differ");
    }
  }
  // Scales: mean |q| at a fine step, times the step.
  constexpr float kFine = 1.0f / 16;
  std::vector<double> sum(size_t{G} * d, 0.0);
  double tokens = 0;
  internal::SeqLoopResult r;
  for (const Chunk& c : chunks) {
    loop(c, kFine, &r);
    const uint32_t T = c.shape.tokens;
    for (uint32_t g = first_group; g < G; ++g) {
      for (uint32_t t = 0; t < T; ++t) {
        const int32_t* row = r.q.data() + (size_t{g} * T + t) * d;
        for (uint32_t i = 0; i < d; ++i) sum[size_t{g} * d + i] += std::abs(double(row[i]));
      }
    }
    tokens += T;
  }
  p.static_scale.assign(size_t{G} * d, internal::kSeqStaticScaleNone);
  for (size_t k = size_t{first_group} * d; k < sum.size(); ++k) {
    const double a = sum[k] / tokens * kFine;
    if (a > 0) p.static_scale[k] = internal::SeqLog2Sixteenths(a);
  }
  // Tables: symbol counts per (class, context) over loops at steps 1/4 .. 8.
  std::vector<uint64_t> counts(
      size_t{internal::kSeqStaticClasses} * internal::kSeqLaneContexts * internal::kSeqLaneSymbols, 1);
  std::vector<uint64_t> signed_counts(size_t{internal::kSeqStaticClasses} * internal::kSeqSignedSymbols, 1);
  for (const float delta : {0.25f, 0.5f, 1.0f, 2.0f, 4.0f, 8.0f}) {
    const int16_t step_class = internal::SeqStepClass(delta);
    for (const Chunk& c : chunks) {
      loop(c, delta, &r);
      const uint32_t T = c.shape.tokens;
      for (uint32_t g = first_group; g < G; ++g) {
        internal::SeqAddStaticCounts(r.q.data() + size_t{g} * T * d, T, d, p.static_scale.data() + size_t{g} * d,
                                     step_class, 128, counts.data(), signed_counts.data());
      }
    }
  }
  p.static_freq = internal::SeqStaticFreqs(counts);
  p.signed_freq = internal::SeqStaticFreqs(signed_counts, internal::kSeqSignedSymbols);
  return p.Validate();
}

Result<SeqProfile> CalibrateSeqProfile(const std::vector<Chunk>& chunks, const SeqCalibrateOptions& options,
                                       const KvModel* model, SeqCalibrateReport* report) {
  const auto start = std::chrono::steady_clock::now();
  if (chunks.empty()) return InvalidArgument("calibrate: no chunks");
  const KvShape& s0 = chunks[0].shape;
  const uint32_t L = s0.layers, H = s0.kv_heads, d = s0.head_dim;
  uint64_t total_tokens = 0;
  for (const Chunk& c : chunks) {
    SEQKV_RETURN_IF_ERROR(c.Validate());
    if (c.shape.layers != L || c.shape.kv_heads != H || c.shape.head_dim != d) {
      return InvalidArgument("calibrate: chunks have different shapes");
    }
    if (c.rope.style != chunks[0].rope.style) return InvalidArgument("calibrate: chunks have different RoPE styles");
    total_tokens += c.shape.tokens;
  }
  if (d > 1024) return InvalidArgument("calibrate: head_dim above 1024");
  SeqProfile p;
  p.layers = L;
  p.kv_heads = H;
  p.head_dim = d;
  p.pre_rope_keys = options.pre_rope_keys;
  p.inputs = options.inputs;
  p.calib_tokens = static_cast<uint32_t>(std::min<uint64_t>(total_tokens, UINT32_MAX));
  p.proxy_scale = static_cast<float>(options.proxy_scale);
  if (!(options.proxy_scale > 0)) return InvalidArgument("calibrate: proxy scale must be positive");
  if (model != nullptr) {
    if (model->layers() != L || model->kv_heads() != H || model->head_dim() != d) {
      return InvalidArgument("calibrate: the model's shape does not match the chunks");
    }
    p.layer0_from_model = true;
    p.model_id = model->id();
  }
  const uint32_t G = p.groups(), F = p.features();
  if (total_tokens < 2 * uint64_t{F}) {
    return InvalidArgument("calibrate: " + std::to_string(total_tokens) + " tokens are too few for " +
                           std::to_string(F) + " predictor inputs (give at least " + std::to_string(2 * F) + ")");
  }
  p.predictor.assign(size_t{G} * F * d, 0.0f);
  p.basis.assign(size_t{G} * d * d, 0.0f);
  p.step_scale.assign(size_t{G} * d, 1.0f);
  p.sensitivity.assign(G, 1.0f);

  std::vector<std::vector<float>> xs;
  for (const Chunk& c : chunks) xs.push_back(internal::SeqCodingDomain(c, options.pre_rope_keys));

  std::vector<double> resid_energy(G, 0), klt_gain(G, 0);
  const uint32_t heads_in_blocks = options.inputs == SeqInputs::kSameHead ? H : 1;
  for (uint32_t l = 0; l < L; ++l) {
    const bool mean_only = l == 0 || options.inputs == SeqInputs::kMean;
    const uint32_t Fi = mean_only ? 1 : (options.inputs == SeqInputs::kAllHeads ? 2 * H * d + 1 : 2 * d + 1);
    for (uint32_t block = 0; block < (mean_only ? 1 : heads_in_blocks); ++block) {
      // Normal equations shared by the groups this block predicts.
      std::vector<double> xtx(size_t{Fi} * Fi, 0.0);
      std::vector<std::vector<double>> xty(2 * H, std::vector<double>(size_t{Fi} * d, 0.0));
      std::vector<std::vector<float>> feats(chunks.size());
      for (size_t ci = 0; ci < chunks.size(); ++ci) {
        const uint32_t T = chunks[ci].shape.tokens;
        const size_t per_group = size_t{T} * d, per_layer = 2 * H * per_group;
        if (mean_only) {
          feats[ci].assign(T, 1.0f);
        } else {
          feats[ci] = FeatureRows(xs[ci].data() + (l - 1) * per_layer, H, T, d, options.inputs, block);
        }
        internal::GramAccumulate(feats[ci].data(), T, Fi, &xtx);
        for (uint32_t kv = 0; kv < 2; ++kv) {
          for (uint32_t h = 0; h < H; ++h) {
            if (options.inputs == SeqInputs::kSameHead && !mean_only && h != block) continue;
            const float* y = xs[ci].data() + l * per_layer + (size_t{kv} * H + h) * per_group;
            internal::CrossAccumulate(feats[ci].data(), T, Fi, y, d, &xty[kv * H + h]);
          }
        }
      }
      for (uint32_t kv = 0; kv < 2; ++kv) {
        for (uint32_t h = 0; h < H; ++h) {
          if (options.inputs == SeqInputs::kSameHead && !mean_only && h != block) continue;
          const uint32_t g = SeqGroup(l, kv, h, H);
          std::vector<double> w;
          SEQKV_RETURN_IF_ERROR(internal::CholeskySolveRidge(static_cast<int>(Fi), xtx, static_cast<int>(d),
                                                             xty[kv * H + h], mean_only ? 0.0 : options.ridge, &w));
          // Stored rows: features in profile order, bias last (row F - 1).
          float* dst = p.predictor.data() + size_t{g} * F * d;
          for (uint32_t f = 0; f + 1 < Fi; ++f) {
            for (uint32_t j = 0; j < d; ++j) dst[size_t{f} * d + j] = static_cast<float>(w[size_t{f} * d + j]);
          }
          for (uint32_t j = 0; j < d; ++j) dst[size_t{F - 1} * d + j] = static_cast<float>(w[size_t{Fi - 1} * d + j]);
          // Residual covariance with the stored (float32) predictor.
          std::vector<double> cov(size_t{d} * d, 0.0), r(d);
          double raw = 0, res = 0;
          uint64_t n = 0;
          for (size_t ci = 0; ci < chunks.size(); ++ci) {
            const uint32_t T = chunks[ci].shape.tokens;
            const size_t per_group = size_t{T} * d, per_layer = 2 * H * per_group;
            const float* y = xs[ci].data() + l * per_layer + (size_t{kv} * H + h) * per_group;
            for (uint32_t t = 0; t < T; ++t) {
              const float* fr = feats[ci].data() + size_t{t} * Fi;
              for (uint32_t j = 0; j < d; ++j) r[j] = y[size_t{t} * d + j];
              for (uint32_t f = 0; f < Fi; ++f) {
                const double a = fr[f];
                if (a == 0) continue;
                const float* wr = f + 1 == Fi ? dst + size_t{F - 1} * d : dst + size_t{f} * d;
                for (uint32_t j = 0; j < d; ++j) r[j] -= a * wr[j];
              }
              for (uint32_t j = 0; j < d; ++j) {
                raw += double{y[size_t{t} * d + j]} * y[size_t{t} * d + j];
                res += r[j] * r[j];
              }
              for (uint32_t a = 0; a < d; ++a) {
                for (uint32_t b = a; b < d; ++b) cov[size_t{a} * d + b] += r[a] * r[b];
              }
              ++n;
            }
          }
          for (uint32_t a = 0; a < d; ++a) {
            for (uint32_t b = a; b < d; ++b) {
              cov[size_t{a} * d + b] /= double(n);
              cov[size_t{b} * d + a] = cov[size_t{a} * d + b];
            }
          }
          std::vector<double> evals, evecs;
          internal::SymmetricEigen(static_cast<int>(d), cov, &evals, &evecs);
          float* basis = p.basis.data() + size_t{g} * d * d;
          for (uint32_t i = 0; i < d; ++i) {
            for (uint32_t j = 0; j < d; ++j) basis[size_t{i} * d + j] = static_cast<float>(evecs[size_t{j} * d + i]);
          }
          resid_energy[g] = raw > 0 ? res / raw : 0;
          double am = 0, lg = 0;
          for (double e : evals) {
            am += std::max(e, 1e-20);
            lg += std::log2(std::max(e, 1e-20));
          }
          am /= d;
          klt_gain[g] = 0.5 * (std::log2(am) - lg / d);
        }
      }
    }
  }

  if (!options.sensitivity.empty()) {
    if (options.sensitivity.size() != G) return InvalidArgument("calibrate: sensitivity count does not match");
    double lg = 0;
    for (double v : options.sensitivity) {
      if (!(v > 0) || !std::isfinite(v)) return InvalidArgument("calibrate: sensitivities must be positive");
      lg += std::log(v);
    }
    const double geo = std::exp(lg / G);
    for (uint32_t g = 0; g < G; ++g) {
      p.sensitivity[g] = static_cast<float>(options.sensitivity[g]);
      const float scale = static_cast<float>(1.0 / std::sqrt(options.sensitivity[g] / geo));
      for (uint32_t i = 0; i < d; ++i) p.step_scale[size_t{g} * d + i] = scale;
    }
    p.has_sensitivity = true;
  }
  SEQKV_RETURN_IF_ERROR(p.Validate());
  if (options.static_model) SEQKV_RETURN_IF_ERROR(FitSeqStaticModel(chunks, &p));
  if (report != nullptr) {
    report->residual_energy = resid_energy;
    report->klt_gain_bits = klt_gain;
    report->seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }
  return p;
}

}  // namespace seqkv
