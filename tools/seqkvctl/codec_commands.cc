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
#include "seqkv/codec/kv_model.h"
#include "seqkv/codec/safetensors.h"
#include "seqkv/codec/seq_profile.h"

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
  if (m.seq) {
    j["seq"] = {{"delta0", m.seq->delta0},
                {"proxy_kl", m.seq->proxy},
                {"lossless_fallback", m.seq->lossless_fallback},
                {"guardrail_raised", m.seq->guardrail_raised},
                {"layer0_corrections", m.seq->layer0_corrections},
                {"layer_bits_per_element", m.seq->layer_bits}};
  }
  return j;
}

std::string LayerBitsText(const std::vector<double>& bits) {
  std::string s;
  char buf[32];
  for (size_t l = 0; l < bits.size(); ++l) {
    std::snprintf(buf, sizeof buf, "%sL%zu %.3f", l ? "  " : "", l, bits[l]);
    s += buf;
  }
  return s;
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
  if (m.seq) {
    if (m.seq->lossless_fallback) {
      std::printf("seq              budget not reachable lossily: coded seq:lossless (fallback)\n");
    } else {
      std::printf("seq step         %.5g%s\n", m.seq->delta0, m.seq->guardrail_raised ? "  (raised by the kl budget)" : "");
      if (m.seq->proxy > 0) std::printf("seq proxy KL     %.6f nats (estimate)\n", m.seq->proxy);
      std::printf("seq layer 0      %s (%llu corrections)\n", m.seq->layer0_corrections || !m.seq->layer_bits.empty() ? "coded" : "-",
                  (unsigned long long)m.seq->layer0_corrections);
      std::printf("bits per layer   %s\n", LayerBitsText(m.seq->layer_bits).c_str());
    }
  }
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
    if (r.has_seq) {
      const std::string proxy = r.proxy > 0 ? "; proxy KL " + Cell(r.proxy, "%.5f") : "";
      std::printf("%-*s   bits per layer: %s%s; fallbacks %llu, guardrail raised %llu\n", w, "",
                  LayerBitsText(r.layer_bits).c_str(), proxy.c_str(), (unsigned long long)r.lossless_fallbacks,
                  (unsigned long long)r.guardrail_raised);
    }
  }
}

// Options shared by roundtrip and encode.
struct DumpCodecArgs {
  std::string spec = "lossless";
  std::string in;
  std::string out;
  bool json = false;
  std::vector<std::string> profiles;
  std::string model_dir;
};

// --profile and --model: side information for codecs that need it (seq's
// lossy modes); ignored by the others.
void AddSideInfoOptions(CLI::App* cmd, std::vector<std::string>* profiles, std::string* model_dir) {
  cmd->add_option("--profile", *profiles, "Codec profile file (from `codec calibrate`); repeatable")
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
  cmd->add_option("--model", *model_dir, "Model folder (Hugging Face Llama checkpoint) for codecs that use it");
}

std::shared_ptr<DumpCodecArgs> AddDumpCodecOptions(CLI::App* cmd, const char* out_help, bool out_required) {
  auto args = std::make_shared<DumpCodecArgs>();
  cmd->add_option("--codec", args->spec, "Codec spec, e.g. turboquant:bits=3")->capture_default_str();
  cmd->add_option("--in", args->in, "Input KV dump (.safetensors)")->required();
  auto* out = cmd->add_option("--out", args->out, out_help);
  if (out_required) out->required();
  cmd->add_flag("--json", args->json, "Print one JSON object");
  AddSideInfoOptions(cmd, &args->profiles, &args->model_dir);
  return args;
}

struct DumpAndCodec {
  KvDump dump;
  std::unique_ptr<Codec> codec;
};

Result<DumpAndCodec> LoadDumpAndCodec(const DumpCodecArgs& args) {
  DumpAndCodec out;
  SEQKV_RETURN_IF_ERROR(LoadSideInfo(args.profiles, args.model_dir, args.json));
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
    auto profiles = std::make_shared<std::vector<std::string>>();
    auto model_dir = std::make_shared<std::string>();
    AddSideInfoOptions(cmd, profiles.get(), model_dir.get());
    cmd->callback([=] {
      Status side = LoadSideInfo(*profiles, *model_dir, *as_json);
      if (!side.ok()) { *exit_code = Fail(side); return; }
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
    cmd->add_option("--in", opts->inputs, "KV dumps (.safetensors): folders and/or files")->required();
    auto profiles = std::make_shared<std::vector<std::string>>();
    cmd->add_option("--codecs", *codecs, "Comma-separated codec specs; separate specs with ';' if a spec has commas")
        ->capture_default_str();
    cmd->add_flag("--quality", opts->quality, "Also measure model-level quality (KL, top-1, delta CE)");
    cmd->add_option("--model", opts->model_dir,
                    "Model folder (Hugging Face Llama checkpoint): for --quality and for codecs that use it");
    cmd->add_option("--profile", *profiles, "Codec profile file (from `codec calibrate`); repeatable")
      ->expected(1)
      ->allow_extra_args(false)
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll);
    cmd->add_option("--prefix", opts->prefix, "Positions used as the cache for --quality")->capture_default_str();
    cmd->add_flag("--json", *as_json, "Print one JSON object");
    cmd->add_flag("--per-file", opts->per_file, "Also list every file");
    cmd->add_option("--chunk-tokens", opts->chunk_tokens,
                    "Code each dump in chunks of this many tokens, as a client stores a sequence (0: whole dumps)")
        ->capture_default_str()
        ->check(CLI::Range(0u, kMaxTokens));
    cmd->callback([=] {
      Status side = LoadSideInfo(*profiles, opts->model_dir, *as_json);
      if (!side.ok()) { *exit_code = Fail(side); return; }
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
        json j = {{"in", opts->inputs}, {"files", result->files}, {"quality", opts->quality}};
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
        std::printf("%zu files%s\n", result->files.size(),
                    opts->quality ? (", quality with " + opts->model_dir).c_str() : "");
        PrintTable(result->summary, opts->quality);
      }
    });
  }

  // codec calibrate
  {
    auto* cmd = codec->add_subcommand(
        "calibrate", "Fit a seq codec profile (predictors, KLT bases, sensitivity-weighted steps) on sample dumps");
    struct Args {
      std::vector<std::string> inputs;
      std::string out, model_dir, sensitivity, inputs_mode = "auto";
      bool no_sensitivity = false, post_rope = false, json = false, no_fit_proxy = false;
      double ridge = 1e-3, proxy_scale = 1.0;
    };
    auto a = std::make_shared<Args>();
    cmd->add_option("--in", a->inputs, "Sample KV dumps (.safetensors): folders and/or files")->required();
    cmd->add_option("--out", a->out, "Profile file to write")->required();
    cmd->add_option("--model", a->model_dir,
                    "Model folder: layer 0 is then computed from the model, and sensitivities are measured "
                    "with it (python3 -m seqkv_quality sensitivity) unless --sensitivity is given");
    cmd->add_option("--sensitivity", a->sensitivity, "Sensitivities measured earlier (seqkv-sensitivity/1 JSON)");
    cmd->add_flag("--no-sensitivity", a->no_sensitivity, "Plain MSE step allocation (kl= is then unavailable)");
    cmd->add_option("--inputs", a->inputs_mode,
                    "Predictor inputs: all (every kv head of the previous layer), same (own head), mean, "
                    "auto (all while 2*kv_heads*head_dim <= 1024, else same)")
        ->capture_default_str();
    cmd->add_flag("--post-rope", a->post_rope, "Code keys after RoPE (default: before)");
    cmd->add_option("--ridge", a->ridge, "Ridge penalty of the predictors")->capture_default_str();
    cmd->add_option("--proxy-scale", a->proxy_scale,
                    "KL per unit of the sensitivity proxy; with --model it is measured instead (encodes of the "
                    "sample dumps at two steps, scored by the quality tool) unless --no-fit-proxy")
        ->capture_default_str();
    cmd->add_flag("--no-fit-proxy", a->no_fit_proxy, "Keep --proxy-scale as given");
    cmd->add_flag("--json", a->json, "Print one JSON object");
    cmd->callback([=] {
      auto files = CollectDumps(a->inputs);
      if (!files.ok()) { *exit_code = Fail(files.status()); return; }
      std::vector<Chunk> chunks;
      for (const std::string& f : *files) {
        auto dump = ReadKvDump(f);
        if (!dump.ok()) { *exit_code = Fail(dump.status().WithContext(f)); return; }
        chunks.push_back(std::move(dump->chunk));
      }
      const KvShape& shape = chunks[0].shape;
      SeqCalibrateOptions o;
      o.pre_rope_keys = !a->post_rope;
      o.ridge = a->ridge;
      o.proxy_scale = a->proxy_scale;
      if (a->inputs_mode == "auto") {
        o.inputs = 2 * shape.kv_heads * shape.head_dim <= 1024 ? SeqInputs::kAllHeads : SeqInputs::kSameHead;
      } else {
        auto in = ParseSeqInputs(a->inputs_mode);
        if (!in.ok()) { *exit_code = Fail(in.status()); return; }
        o.inputs = *in;
      }
      std::shared_ptr<const KvModel> model;
      if (!a->model_dir.empty()) {
        auto m = KvModel::Load(a->model_dir);
        if (!m.ok()) { *exit_code = Fail(m.status()); return; }
        model = *m;
      }
      std::string sens_source = "none (plain MSE)";
      if (!a->sensitivity.empty() && a->no_sensitivity) {
        *exit_code = Fail(InvalidArgument("--sensitivity and --no-sensitivity exclude each other"));
        return;
      }
      std::string sens_text;
      if (!a->sensitivity.empty()) {
        auto bytes = ReadFileBytes(a->sensitivity);
        if (!bytes.ok()) { *exit_code = Fail(bytes.status()); return; }
        sens_text.assign(bytes->begin(), bytes->end());
        sens_source = a->sensitivity;
      } else if (model && !a->no_sensitivity) {
        std::fprintf(stderr, "measuring sensitivities with the model on %zu dumps (python3 -m seqkv_quality sensitivity)\n",
                     files->size());
        auto text = RunSensitivityTool(*files, a->model_dir);
        if (!text.ok()) { *exit_code = Fail(text.status()); return; }
        sens_text = *text;
        sens_source = "measured with " + a->model_dir;
      } else if (!a->no_sensitivity) {
        std::fprintf(stderr, "note: no --model or --sensitivity: plain MSE steps; seq:kl= will be unavailable\n");
      }
      if (!sens_text.empty()) {
        auto sens = ParseSensitivityJson(sens_text, shape.layers, shape.kv_heads, shape.head_dim);
        if (!sens.ok()) { *exit_code = Fail(sens.status()); return; }
        o.sensitivity = *sens;
      }
      std::fprintf(stderr, "fitting predictors (%s inputs) and KLT bases on %zu dumps\n",
                   std::string(SeqInputsName(o.inputs)).c_str(), chunks.size());
      uint64_t tokens = 0;
      for (const Chunk& c : chunks) tokens += c.shape.tokens;
      const uint64_t inputs = o.inputs == SeqInputs::kAllHeads ? 2ull * shape.kv_heads * shape.head_dim + 1
                              : o.inputs == SeqInputs::kSameHead ? 2ull * shape.head_dim + 1 : 1;
      if (tokens < 10 * inputs) {
        std::fprintf(stderr, "note: %llu sample tokens for %llu predictor inputs: the fit will flatter itself; "
                     "give at least %llu tokens (or --inputs same)\n",
                     (unsigned long long)tokens, (unsigned long long)inputs, (unsigned long long)(10 * inputs));
      }
      SeqCalibrateReport report;
      auto profile = CalibrateSeqProfile(chunks, o, model.get(), &report);
      if (!profile.ok()) { *exit_code = Fail(profile.status()); return; }
      json proxy_fit = nullptr;
      if (model && profile->has_sensitivity && !a->no_fit_proxy) {
        // The guardrail's calibration: measured KL / proxy on the sample dumps' own encodes.
        std::fprintf(stderr, "fitting the KL proxy: encodes at two steps, scored with the model\n");
        auto unscaled = std::make_shared<const SeqProfile>(*profile);
        SeqResources::Default().AddProfile(unscaled);
        SeqResources::Default().AddModel(model);
        EvalOptions eo;
        eo.inputs = *files;
        eo.quality = true;
        eo.model_dir = a->model_dir;
        for (const char* delta : {"0.2", "0.8"}) {
          eo.codecs.push_back(std::string("seq:delta=") + delta + ",profile=" + unscaled->Id());
        }
        auto fit = RunEval(eo, &std::cerr);
        if (!fit.ok()) { *exit_code = Fail(fit.status().WithContext("proxy fit")); return; }
        double kl = 0, proxy = 0, log_sum = 0, log_sq = 0;
        int n = 0;
        for (const RoundTripMetrics& m : fit->per_file) {
          if (!m.seq || !m.quality || m.seq->proxy <= 0 || m.quality->kl_nats <= 0) continue;
          kl += m.quality->kl_nats;
          proxy += m.seq->proxy;
          const double r = std::log(m.quality->kl_nats / m.seq->proxy);
          log_sum += r;
          log_sq += r * r;
          ++n;
        }
        if (n == 0 || !(proxy > 0)) {
          *exit_code = Fail(Internal("proxy fit: no usable encodes"));
          return;
        }
        const double mean = log_sum / n;
        profile->proxy_scale = static_cast<float>(profile->proxy_scale * kl / proxy);
        proxy_fit = {{"scale", profile->proxy_scale},
                     {"points", n},
                     {"geo_std", std::exp(std::sqrt(std::max(0.0, log_sq / n - mean * mean)))}};
      }
      Status st = profile->Save(a->out);
      if (!st.ok()) { *exit_code = Fail(st); return; }
      const SeqProfile::Size size = profile->SizeBytes();
      const uint32_t L = profile->layers, H = profile->kv_heads;
      std::vector<double> k_res(L, 0), v_res(L, 0), k_gain(L, 0), v_gain(L, 0);
      for (uint32_t l = 0; l < L; ++l) {
        for (uint32_t h = 0; h < H; ++h) {
          k_res[l] += report.residual_energy[(l * 2 + 0) * H + h] / H;
          v_res[l] += report.residual_energy[(l * 2 + 1) * H + h] / H;
          k_gain[l] += report.klt_gain_bits[(l * 2 + 0) * H + h] / H;
          v_gain[l] += report.klt_gain_bits[(l * 2 + 1) * H + h] / H;
        }
      }
      if (a->json) {
        std::cout << json{{"profile", a->out},
                          {"id", profile->Id()},
                          {"files", *files},
                          {"tokens", profile->calib_tokens},
                          {"inputs", std::string(SeqInputsName(profile->inputs))},
                          {"pre_rope_keys", profile->pre_rope_keys},
                          {"layer0_from_model", profile->layer0_from_model},
                          {"sensitivity", sens_source},
                          {"bytes", {{"total", size.total}, {"predictor", size.predictor}, {"basis", size.basis},
                                     {"steps", size.steps}, {"static_model", size.static_model}}},
                          {"static_model", profile->has_static_model()},
                          {"signed_model", profile->has_signed_model()},
                          {"residual_energy_k", k_res},
                          {"residual_energy_v", v_res},
                          {"klt_gain_bits_k", k_gain},
                          {"klt_gain_bits_v", v_gain},
                          {"proxy_scale", profile->proxy_scale},
                          {"proxy_fit", proxy_fit},
                          {"seconds", report.seconds}}
                         .dump()
                  << "\n";
      } else {
        std::printf("wrote %s: profile %s, %.2f MB (predictors %.2f, bases %.2f, steps %.3f, static model %.3f: "
                    "lane streams, streams=lanes, lanes2 and lanes3)\n",
                    a->out.c_str(), profile->Id().c_str(), size.total / 1e6, size.predictor / 1e6, size.basis / 1e6,
                    size.steps / 1e6, size.static_model / 1e6);
        std::printf("fitted on %u tokens of %zu dumps in %.1f s; inputs %s; keys %s RoPE; layer 0 %s; "
                    "sensitivities: %s\n",
                    profile->calib_tokens, files->size(), report.seconds,
                    std::string(SeqInputsName(profile->inputs)).c_str(), profile->pre_rope_keys ? "before" : "after",
                    profile->layer0_from_model ? "from the model" : "coded", sens_source.c_str());
        if (!proxy_fit.is_null()) {
          std::printf("KL proxy scale %.4g (measured KL / proxy over %d encodes; spread x%.2f)\n",
                      profile->proxy_scale, proxy_fit["points"].get<int>(), proxy_fit["geo_std"].get<double>());
        }
        std::printf("layer  K resid  V resid  K KLT bits  V KLT bits\n");
        for (uint32_t l = 0; l < L; ++l) {
          std::printf("%5u  %7.3f  %7.3f  %10.3f  %10.3f\n", l, k_res[l], v_res[l], k_gain[l], v_gain[l]);
        }
      }
    });
  }
}

}  // namespace seqkv::ctl
