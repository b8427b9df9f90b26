// `seqkvctl codec ...`: encode, decode, round-trip and evaluate codecs on KV
// dumps (safetensors, as in ../shared/kvdata).
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <map>
#include <nlohmann/json.hpp>
#include <sstream>

#include "codec_eval.h"
#include "commands.h"
#include "seqkv/codec/format.h"
#include "seqkv/codec/safetensors.h"

namespace seqkv::ctl {

namespace {

using json = nlohmann::json;
namespace fs = std::filesystem;

int Fail(const Status& s) {
  std::cerr << "error: " << s.ToString() << "\n";
  return s.code() == StatusCode::kInvalidArgument || s.code() == StatusCode::kNotFound ? 2 : 1;
}

json MetricsJson(const RoundTripMetrics& m) {
  json j = {{"codec", m.codec},
            {"file", m.file},
            {"tokens", m.tokens},
            {"raw_bytes", m.raw_bytes},
            {"encoded_bytes", m.encoded_bytes},
            {"bits_per_element", m.bits_per_element},
            {"bits_per_token", m.bits_per_token},
            {"ratio", m.ratio},
            {"encode_mb_s", m.encode_mb_s},
            {"recompute_needed", m.recompute_needed}};
  if (!m.recompute_needed) {
    j["decode_mb_s"] = m.decode_mb_s;
    j["k_rel_mse"] = m.k_rel_mse;
    j["v_rel_mse"] = m.v_rel_mse;
    j["k_max_err"] = m.k_max_err;
    j["v_max_err"] = m.v_max_err;
    j["bit_exact"] = m.bit_exact;
  }
  if (m.quality) {
    j["kl_nats"] = m.quality->kl_nats;
    j["top1_agreement"] = m.quality->top1_agreement;
    j["delta_ce_bits"] = m.quality->delta_ce_bits;
  }
  return j;
}

void PrintHuman(const RoundTripMetrics& m) {
  std::printf("codec            %s\n", m.codec.c_str());
  std::printf("bits/element     %.4f\n", m.bits_per_element);
  std::printf("ratio            %.3f  (%llu -> %llu bytes)\n", m.ratio, (unsigned long long)m.raw_bytes,
              (unsigned long long)m.encoded_bytes);
  std::printf("encode           %.1f MB/s\n", m.encode_mb_s);
  if (m.recompute_needed) {
    std::printf("decode           recompute needed (token-only tier): %.2f bits/token\n", m.bits_per_token);
    return;
  }
  std::printf("decode           %.1f MB/s\n", m.decode_mb_s);
  std::printf("K rel MSE        %.6g  (max err %.4g)\n", m.k_rel_mse, m.k_max_err);
  std::printf("V rel MSE        %.6g  (max err %.4g)\n", m.v_rel_mse, m.v_max_err);
  std::printf("bit-exact        %s\n", m.bit_exact ? "yes" : "no");
  if (m.quality) {
    std::printf("KL               %.6f nats\n", m.quality->kl_nats);
    std::printf("top-1 agreement  %.4f\n", m.quality->top1_agreement);
    std::printf("delta CE         %+.5f bits/token\n", m.quality->delta_ce_bits);
  }
}

std::string Cell(double v, const char* fmt) {
  char buf[64];
  std::snprintf(buf, sizeof buf, fmt, v);
  return buf;
}

void PrintTable(const std::vector<EvalRow>& rows, bool quality) {
  int w = 5;
  for (const EvalRow& r : rows) w = std::max(w, static_cast<int>(r.codec.size()));
  std::printf("%-*s %9s %8s %11s %11s", w, "codec", "bits/el", "ratio", "K relMSE", "V relMSE");
  if (quality) std::printf(" %10s %7s %9s", "KL nats", "top-1", "dCE bits");
  std::printf(" %9s %9s\n", "enc MB/s", "dec MB/s");
  for (const EvalRow& r : rows) {
    std::printf("%-*s %9.4f %8.3f", w, r.codec.c_str(), r.bits_per_element, r.ratio);
    if (r.recompute_needed) {
      std::printf(" %23s", ("recompute (" + Cell(r.bits_per_token, "%.2f") + " b/tok)").c_str());
      if (quality) std::printf(" %10s %7s %9s", "-", "-", "-");
      std::printf(" %9.1f %9s\n", r.encode_mb_s, "-");
      continue;
    }
    std::printf(" %11.4g %11.4g", r.k_rel_mse, r.v_rel_mse);
    if (quality) {
      if (r.has_quality) {
        std::printf(" %10.5f %7.4f %+9.5f", r.kl_nats, r.top1_agreement, r.delta_ce_bits);
      } else {
        std::printf(" %10s %7s %9s", "-", "-", "-");
      }
    }
    std::printf(" %9.1f %9.1f\n", r.encode_mb_s, r.decode_mb_s);
  }
}

// Options shared by roundtrip and encode.
struct DumpCodecArgs {
  std::string spec = "lossless";
  std::string in;
  std::string out;
  bool json = false;
};

std::shared_ptr<DumpCodecArgs> AddDumpCodecOptions(CLI::App* cmd, const char* out_help, bool out_required) {
  auto args = std::make_shared<DumpCodecArgs>();
  cmd->add_option("--codec", args->spec, "Codec spec, e.g. turboquant:bits=3")->capture_default_str();
  cmd->add_option("--in", args->in, "Input KV dump (.safetensors)")->required();
  auto* out = cmd->add_option("--out", args->out, out_help);
  if (out_required) out->required();
  cmd->add_flag("--json", args->json, "Print one JSON object");
  return args;
}

struct DumpAndCodec {
  KvDump dump;
  std::unique_ptr<Codec> codec;
};

Result<DumpAndCodec> LoadDumpAndCodec(const DumpCodecArgs& args) {
  DumpAndCodec out;
  SEQKV_ASSIGN_OR_RETURN(out.dump, ReadKvDump(args.in));
  SEQKV_ASSIGN_OR_RETURN(out.codec, MakeCodec(args.spec));
  return out;
}

}  // namespace

void RegisterCodecCommands(CLI::App& app, int* exit_code) {
  CLI::App* codec = app.add_subcommand("codec", "Encode, decode and evaluate KV codecs on KV dumps");
  codec->require_subcommand(1);

  // codec roundtrip
  {
    auto* cmd = codec->add_subcommand("roundtrip", "Encode and decode a KV dump; print size, error and speed");
    auto args = AddDumpCodecOptions(cmd, "Write the reconstruction here (same format)", false);
    cmd->callback([=] {
      auto loaded = LoadDumpAndCodec(*args);
      if (!loaded.ok()) { *exit_code = Fail(loaded.status()); return; }
      Chunk recon;
      auto m = RoundTrip(loaded->dump.chunk, *loaded->codec, &recon);
      if (!m.ok()) { *exit_code = Fail(m.status()); return; }
      m->file = fs::path(args->in).filename().string();
      if (!args->out.empty()) {
        if (m->recompute_needed) {
          *exit_code = Fail(FailedPrecondition("recompute needed: " + args->spec + " keeps token ids only, nothing to write"));
          return;
        }
        Status s = WriteSafetensors(args->out, KvDumpToSafetensors(recon, loaded->dump.file));
        if (!s.ok()) { *exit_code = Fail(s); return; }
      }
      if (args->json) {
        std::cout << MetricsJson(*m).dump() << "\n";
      } else {
        PrintHuman(*m);
      }
    });
  }

  // codec encode
  {
    auto* cmd = codec->add_subcommand("encode", "Encode a KV dump into one chunk file (the container, nothing else)");
    auto args = AddDumpCodecOptions(cmd, "Output chunk file", true);
    cmd->callback([=] {
      auto loaded = LoadDumpAndCodec(*args);
      if (!loaded.ok()) { *exit_code = Fail(loaded.status()); return; }
      const Chunk& chunk = loaded->dump.chunk;
      auto bytes = EncodeChunk(chunk, *loaded->codec);
      if (!bytes.ok()) { *exit_code = Fail(bytes.status()); return; }
      Status s = WriteFileBytes(args->out, *bytes);
      if (!s.ok()) { *exit_code = Fail(s); return; }
      double bpe = bytes->size() * 8.0 / (2.0 * chunk.shape.elements());
      if (args->json) {
        std::cout << json{{"codec", loaded->codec->Spec()}, {"bytes", bytes->size()}, {"bits_per_element", bpe}}.dump() << "\n";
      } else {
        std::printf("wrote %s: %zu bytes, %.4f bits/element (%s)\n", args->out.c_str(), bytes->size(), bpe,
                    loaded->codec->Spec().c_str());
      }
    });
  }

  // codec decode
  {
    auto* cmd = codec->add_subcommand("decode", "Decode a chunk file into a KV dump");
    auto in = std::make_shared<std::string>();
    auto out = std::make_shared<std::string>();
    auto as_json = std::make_shared<bool>(false);
    cmd->add_option("--in", *in, "Input chunk file")->required();
    cmd->add_option("--out", *out, "Output KV dump (.safetensors)")->required();
    cmd->add_flag("--json", *as_json, "Print one JSON object");
    cmd->callback([=] {
      auto bytes = ReadFileBytes(*in);
      if (!bytes.ok()) { *exit_code = Fail(bytes.status()); return; }
      auto chunk = DecodeChunk(*bytes);
      if (!chunk.ok()) {
        if (IsRecomputeNeeded(chunk.status())) {
          auto tokens = DecodeTokens(*bytes);
          if (tokens.ok() && *as_json) {
            std::cout << json{{"recompute_needed", true}, {"tokens", tokens->tokens}}.dump() << "\n";
          }
        }
        *exit_code = Fail(chunk.status().WithContext(*in));
        return;
      }
      Status s = WriteSafetensors(*out, KvDumpToSafetensors(*chunk, SafetensorsFile{}));
      if (!s.ok()) { *exit_code = Fail(s); return; }
      if (*as_json) {
        std::cout << json{{"tokens", chunk->shape.tokens}, {"layers", chunk->shape.layers},
                          {"kv_heads", chunk->shape.kv_heads}, {"head_dim", chunk->shape.head_dim},
                          {"dtype", std::string(DTypeName(chunk->dtype))}}.dump() << "\n";
      } else {
        std::printf("wrote %s: %u tokens, [%u, %u, %u, %u] %s\n", out->c_str(), chunk->shape.tokens,
                    chunk->shape.layers, chunk->shape.kv_heads, chunk->shape.tokens, chunk->shape.head_dim,
                    std::string(DTypeName(chunk->dtype)).c_str());
      }
    });
  }

  // codec eval
  {
    auto* cmd = codec->add_subcommand("eval", "Evaluate codecs over every KV dump of a folder; one table");
    auto opts = std::make_shared<EvalOptions>();
    auto codecs = std::make_shared<std::string>("raw,lossless");
    auto as_json = std::make_shared<bool>(false);
    cmd->add_option("--in", opts->in_dir, "Folder of KV dumps (.safetensors)")->required();
    cmd->add_option("--codecs", *codecs, "Comma-separated codec specs; separate specs with ';' if a spec has commas")
        ->capture_default_str();
    cmd->add_flag("--quality", opts->quality, "Also measure model-level quality (KL, top-1, delta CE)");
    cmd->add_option("--model", opts->model_dir, "Model folder (Hugging Face Llama checkpoint) for --quality");
    cmd->add_option("--prefix", opts->prefix, "Positions used as the cache for --quality")->capture_default_str();
    cmd->add_flag("--json", *as_json, "Print one JSON object");
    cmd->add_flag("--per-file", opts->per_file, "Also list every file");
    cmd->callback([=] {
      auto specs = SplitCodecList(*codecs);
      if (!specs.ok()) { *exit_code = Fail(specs.status()); return; }
      opts->codecs = *specs;
      if (opts->quality && opts->model_dir.empty()) {
        *exit_code = Fail(InvalidArgument("--quality needs --model DIR"));
        return;
      }
      auto result = RunEval(*opts, &std::cerr);
      if (!result.ok()) { *exit_code = Fail(result.status()); return; }
      if (*as_json) {
        json j = {{"in", opts->in_dir}, {"files", result->files}, {"quality", opts->quality}};
        json rows = json::array();
        for (const EvalRow& r : result->summary) rows.push_back(EvalRowJson(r));
        j["codecs"] = rows;
        if (opts->per_file) {
          json per = json::array();
          for (const RoundTripMetrics& m : result->per_file) per.push_back(MetricsJson(m));
          j["per_file"] = per;
        }
        std::cout << j.dump(1) << "\n";
      } else {
        std::printf("%zu files in %s%s\n", result->files.size(), opts->in_dir.c_str(),
                    opts->quality ? (", quality with " + opts->model_dir).c_str() : "");
        PrintTable(result->summary, opts->quality);
      }
    });
  }
}

}  // namespace seqkv::ctl
