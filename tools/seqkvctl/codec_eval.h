// Round-trip measurement of codecs on KV dumps, used by `seqkvctl codec`.
#pragma once

#include <iosfwd>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "seqkv/codec/codec.h"

namespace seqkv::ctl {

struct QualityMetrics {
  double kl_nats = 0;         // mean KL(original || reconstructed) of next-token distributions
  double top1_agreement = 0;  // fraction of positions with the same argmax
  double delta_ce_bits = 0;   // reconstructed minus original cross-entropy, bits/token
};

struct RoundTripMetrics {
  std::string codec;  // canonical spec
  std::string file;
  uint32_t tokens = 0;
  uint64_t raw_bytes = 0;      // K + V as stored in the dump
  uint64_t encoded_bytes = 0;  // the whole container, headers included
  double bits_per_element = 0; // encoded bits / (K and V elements)
  double bits_per_token = 0;   // encoded bits / tokens
  double ratio = 0;            // raw / encoded
  double encode_mb_s = 0;      // raw MB (1e6 bytes) per second, one core
  double decode_mb_s = 0;
  double k_rel_mse = 0, v_rel_mse = 0;  // sum((x - x')^2) / sum(x^2)
  double k_max_err = 0, v_max_err = 0;
  bool bit_exact = false;
  bool recompute_needed = false;  // token-only tier
  std::optional<QualityMetrics> quality;
  // Lossy seq codec only: what the encoder decided.
  struct Seq {
    double delta0 = 0, proxy = 0;
    bool lossless_fallback = false, guardrail_raised = false;
    uint64_t layer0_corrections = 0;
    std::vector<double> layer_bits;  // bits per element of each layer
  };
  std::optional<Seq> seq;
};

// Encodes and decodes chunk with codec; *recon receives the reconstruction
// (untouched when recompute is needed). chunk_tokens > 0 cuts the chunk into
// pieces of that many tokens first (the last may be shorter) and codes them
// one after another as a client stores a sequence (each piece with its
// parent's context, for codecs that continue parents); the metrics are the
// pieces' together and *recon their decoded concatenation.
Result<RoundTripMetrics> RoundTrip(const Chunk& chunk, const Codec& codec, Chunk* recon, uint32_t chunk_tokens = 0);

struct EvalOptions {
  std::vector<std::string> inputs;  // folders (every *.safetensors) and/or files
  std::vector<std::string> codecs;
  bool quality = false;
  std::string model_dir;
  int prefix = 768;
  bool per_file = false;
  uint32_t chunk_tokens = 0;  // > 0: code each dump in pieces of this many tokens (RoundTrip)
};

// Mean over files for one codec.
struct EvalRow {
  std::string codec;
  double bits_per_element = 0, bits_per_token = 0, ratio = 0;
  double k_rel_mse = 0, v_rel_mse = 0, k_max_err = 0, v_max_err = 0;
  double encode_mb_s = 0, decode_mb_s = 0;
  bool recompute_needed = false;
  bool has_quality = false;
  double kl_nats = 0, top1_agreement = 0, delta_ce_bits = 0;
  bool has_seq = false;  // lossy seq: means over files
  double proxy = 0;
  uint64_t lossless_fallbacks = 0, guardrail_raised = 0;
  std::vector<double> layer_bits;
};

struct EvalResult {
  std::vector<std::string> files;
  std::vector<RoundTripMetrics> per_file;  // file-major
  std::vector<EvalRow> summary;            // one per codec, in the order given
};

// Collects the dumps named by inputs: files as given, folders' *.safetensors
// sorted.
Result<std::vector<std::string>> CollectDumps(const std::vector<std::string>& inputs);

// Runs every codec on every dump of opts.inputs. Progress
// lines go to *progress. With opts.quality, runs the Python quality tool
// (python/seqkv_quality) once over all reconstructions.
Result<EvalResult> RunEval(const EvalOptions& opts, std::ostream* progress);

// "raw,turboquant:bits=3,outliers=16,kivi:bits=2" -> specs; an item with '='
// but no ':' continues the previous spec. ';' always separates.
Result<std::vector<std::string>> SplitCodecList(const std::string& list);

nlohmann::json EvalRowJson(const EvalRow& row);

// Runs `python3 -m seqkv_quality sensitivity` over dumps (its progress goes to
// stderr) and returns the JSON text it wrote.
Result<std::string> RunSensitivityTool(const std::vector<std::string>& files, const std::string& model_dir);

// Registers codec side information (SeqResources): profiles and a model.
Status LoadSideInfo(const std::vector<std::string>& profiles, const std::string& model_dir, bool quiet);

}  // namespace seqkv::ctl
