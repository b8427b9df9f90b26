#include "codec_eval.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <ostream>
#include <random>

#include "seqkv/client/client.h"
#include "seqkv/codec/dtype.h"
#include "seqkv/codec/format.h"
#include "seqkv/codec/kv_model.h"
#include "seqkv/codec/safetensors.h"
#include "seqkv/codec/seq_profile.h"

namespace seqkv::ctl {

namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

void ErrorStats(const Chunk& a, const std::vector<uint8_t>& x, const std::vector<uint8_t>& y, double* rel_mse,
                double* max_err) {
  uint64_t n = a.shape.elements();
  std::vector<float> fx(n), fy(n);
  ToFloat(a.dtype, x.data(), n, fx.data());
  ToFloat(a.dtype, y.data(), n, fy.data());
  double num = 0, den = 0, mx = 0;
  for (uint64_t i = 0; i < n; ++i) {
    double d = double(fx[i]) - double(fy[i]);
    num += d * d;
    den += double(fx[i]) * double(fx[i]);
    mx = std::max(mx, std::fabs(d));
  }
  *rel_mse = den > 0 ? num / den : num;
  *max_err = mx;
}

// Where python/seqkv_quality lives: $SEQKV_PYTHONPATH, else the source tree.
std::string PythonPath() {
  if (const char* env = std::getenv("SEQKV_PYTHONPATH")) return env;
  return SEQKV_PYTHON_DIR;
}

std::string PythonExe() {
  if (const char* env = std::getenv("SEQKV_PYTHON")) return env;
  return "/usr/bin/python3";
}

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\\''";
    } else {
      out += c;
    }
  }
  return out + "'";
}

// Runs the quality tool over (orig, recon) pairs; returns one result per pair.
Result<std::vector<QualityMetrics>> RunQuality(const std::vector<std::pair<std::string, std::string>>& pairs,
                                               const EvalOptions& opts, const std::string& work_dir) {
  json manifest = json::array();
  // Absolute paths: the tool resolves relative ones against the manifest's folder.
  for (const auto& [o, r] : pairs) {
    manifest.push_back({{"orig", fs::absolute(o).string()}, {"recon", fs::absolute(r).string()}});
  }
  std::string manifest_path = work_dir + "/manifest.json";
  {
    std::ofstream out(manifest_path);
    out << manifest.dump();
    if (!out) return Unavailable("cannot write " + manifest_path);
  }
  std::string cmd = "PYTHONPATH=" + ShellQuote(PythonPath()) + " " + ShellQuote(PythonExe()) +
                    " -m seqkv_quality compare --json --model " + ShellQuote(fs::absolute(opts.model_dir).string()) + " --prefix " +
                    std::to_string(opts.prefix) + " --manifest " + ShellQuote(manifest_path);
  FILE* pipe = popen(cmd.c_str(), "r");
  if (!pipe) return Unavailable("cannot run the quality tool: " + cmd);
  std::string output;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, pipe)) > 0) output.append(buf, n);
  int rc = pclose(pipe);
  if (rc != 0) {
    return Unavailable("quality tool failed (exit " + std::to_string(rc) + "): " + cmd +
                       " (set SEQKV_PYTHON to a python3 with torch)");
  }
  json j;
  try {
    j = json::parse(output);
  } catch (const std::exception& e) {
    return Internal(std::string("quality tool printed invalid JSON: ") + e.what());
  }
  if (!j.contains("pairs") || !j["pairs"].is_array() || j["pairs"].size() != pairs.size()) {
    return Internal("quality tool output lacks one result per pair");
  }
  std::vector<QualityMetrics> out;
  for (const json& p : j["pairs"]) {
    QualityMetrics q;
    q.kl_nats = p.at("kl_nats").get<double>();
    q.top1_agreement = p.at("top1_agreement").get<double>();
    q.delta_ce_bits = p.at("delta_ce_bits").get<double>();
    out.push_back(q);
  }
  return out;
}

}  // namespace

Result<RoundTripMetrics> RoundTrip(const Chunk& chunk, const Codec& codec, Chunk* recon, uint32_t chunk_tokens) {
  RoundTripMetrics m;
  m.codec = codec.Spec();
  m.tokens = chunk.shape.tokens;
  m.raw_bytes = 2 * chunk.TensorBytes();
  const uint32_t piece = chunk_tokens > 0 && chunk_tokens < chunk.shape.tokens ? chunk_tokens : chunk.shape.tokens;
  // The pieces, each encoded with its parent's context as a client stores them.
  std::vector<std::vector<uint8_t>> encoded;
  std::vector<uint64_t> layer_bytes;
  double encode_s = 0, proxy = 0;
  ChunkContext ctx;
  const bool is_seq = dynamic_cast<const SeqLossyEncoder*>(&codec) != nullptr;
  RoundTripMetrics::Seq seq;
  for (uint32_t t0 = 0; t0 < chunk.shape.tokens; t0 += piece) {
    const uint32_t n = std::min(piece, chunk.shape.tokens - t0);
    Chunk part;
    if (n == chunk.shape.tokens) {
      part = chunk;
    } else {
      SEQKV_ASSIGN_OR_RETURN(part, client::SliceKv(client::KvView::Of(chunk), t0, n));
    }
    ChunkContext next;
    const auto t1 = Clock::now();
    SEQKV_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, EncodeChunk(part, codec, t0 == 0 ? nullptr : &ctx, &next));
    encode_s += Seconds(t1, Clock::now());
    ctx = std::move(next);
    m.encoded_bytes += bytes.size();
    if (is_seq) {
      const SeqEncodeInfo& info = SeqLastEncodeInfo();
      seq.delta0 = info.delta0;  // the last piece's
      proxy += info.proxy * n;
      seq.lossless_fallback |= info.lossless_fallback;
      seq.guardrail_raised |= info.guardrail_raised;
      seq.layer0_corrections += info.layer0_corrections;
      if (layer_bytes.size() < info.layer_bytes.size()) layer_bytes.resize(info.layer_bytes.size(), 0);
      for (size_t l = 0; l < info.layer_bytes.size(); ++l) layer_bytes[l] += info.layer_bytes[l];
    }
    encoded.push_back(std::move(bytes));
  }
  m.bits_per_element = m.encoded_bytes * 8.0 / (2.0 * chunk.shape.elements());
  m.bits_per_token = m.encoded_bytes * 8.0 / chunk.shape.tokens;
  m.ratio = double(m.raw_bytes) / double(m.encoded_bytes);
  m.encode_mb_s = m.raw_bytes / 1e6 / std::max(encode_s, 1e-9);
  if (is_seq) {
    seq.proxy = proxy / chunk.shape.tokens;  // token-weighted mean over the pieces
    const double per_layer = 2.0 * chunk.shape.kv_heads * chunk.shape.tokens * chunk.shape.head_dim;
    for (uint64_t b : layer_bytes) seq.layer_bits.push_back(8.0 * b / per_layer);
    m.seq = seq;
  }
  // Decoded in order, each piece with its parent's context.
  std::vector<Chunk> parts;
  double decode_s = 0;
  ChunkContext dctx;
  for (size_t i = 0; i < encoded.size(); ++i) {
    ChunkContext next;
    const auto t2 = Clock::now();
    auto decoded = DecodeChunk(encoded[i], i == 0 ? nullptr : &dctx, &next);
    decode_s += Seconds(t2, Clock::now());
    dctx = std::move(next);
    if (!decoded.ok()) {
      if (!IsRecomputeNeeded(decoded.status())) return decoded.status();
      m.recompute_needed = true;
      SEQKV_ASSIGN_OR_RETURN(Chunk tokens_only, DecodeTokens(encoded[i]));
      const uint32_t t0 = static_cast<uint32_t>(i) * piece;
      if (!std::equal(tokens_only.tokens.begin(), tokens_only.tokens.end(), chunk.tokens.begin() + t0)) {
        return DataLoss("token ids did not round-trip");
      }
      continue;
    }
    parts.push_back(std::move(decoded).value());
  }
  if (m.recompute_needed) return m;
  m.decode_mb_s = m.raw_bytes / 1e6 / std::max(decode_s, 1e-9);
  Chunk decoded;
  if (parts.size() == 1) {
    decoded = std::move(parts[0]);
  } else {
    SEQKV_ASSIGN_OR_RETURN(decoded, client::ConcatChunks(parts));
  }
  if (decoded.tokens != chunk.tokens || decoded.first_position != chunk.first_position ||
      !(decoded.shape == chunk.shape)) {
    return DataLoss("decoded chunk metadata differs from the input");
  }
  m.bit_exact = decoded.k == chunk.k && decoded.v == chunk.v;
  ErrorStats(chunk, chunk.k, decoded.k, &m.k_rel_mse, &m.k_max_err);
  ErrorStats(chunk, chunk.v, decoded.v, &m.v_rel_mse, &m.v_max_err);
  *recon = std::move(decoded);
  return m;
}

Result<std::vector<std::string>> SplitCodecList(const std::string& list) {
  std::vector<std::string> specs;
  std::string item;
  auto flush_item = [&](bool hard_separator) {
    if (item.empty()) return;
    bool continues = item.find(':') == std::string::npos && item.find('=') != std::string::npos;
    if (continues && !specs.empty() && !hard_separator) {
      specs.back() += "," + item;
    } else {
      specs.push_back(item);
    }
    item.clear();
  };
  bool after_semicolon = false;
  for (char c : list) {
    if (c == ',' || c == ';') {
      flush_item(after_semicolon);
      after_semicolon = c == ';';
    } else if (c != ' ') {
      item += c;
    }
  }
  flush_item(after_semicolon);
  if (specs.empty()) return InvalidArgument("no codec given");
  for (const std::string& s : specs) {
    auto codec = MakeCodec(s);
    if (!codec.ok()) return codec.status();
  }
  return specs;
}

Result<std::vector<std::string>> CollectDumps(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  std::error_code ec;
  for (const std::string& in : inputs) {
    if (fs::is_directory(in, ec)) {
      std::vector<std::string> found;
      for (const auto& entry : fs::directory_iterator(in)) {
        if (entry.path().extension() == ".safetensors") found.push_back(entry.path().string());
      }
      if (found.empty()) return NotFound("no .safetensors files in " + in);
      std::sort(found.begin(), found.end());
      files.insert(files.end(), found.begin(), found.end());
    } else if (fs::is_regular_file(in, ec)) {
      files.push_back(in);
    } else {
      return NotFound(in + " is neither a folder nor a file");
    }
  }
  if (files.empty()) return InvalidArgument("no input dumps given");
  return files;
}

Result<std::string> RunSensitivityTool(const std::vector<std::string>& files, const std::string& model_dir) {
  std::random_device rd;
  const std::string out = (fs::temp_directory_path() / ("seqkv-sens-" + std::to_string(rd()) + ".json")).string();
  std::string cmd = "PYTHONPATH=" + ShellQuote(PythonPath()) + " " + ShellQuote(PythonExe()) +
                    " -m seqkv_quality sensitivity --model " + ShellQuote(fs::absolute(model_dir).string()) +
                    " --out " + ShellQuote(out);
  for (const std::string& f : files) cmd += " " + ShellQuote(fs::absolute(f).string());
  const int rc = std::system(cmd.c_str());
  if (rc != 0) {
    std::error_code ec;
    fs::remove(out, ec);
    return Unavailable("sensitivity tool failed (exit " + std::to_string(rc) + "): " + cmd +
                       " (set SEQKV_PYTHON to a python3 with torch, or pass --sensitivity FILE / --no-sensitivity)");
  }
  SEQKV_ASSIGN_OR_RETURN(std::vector<uint8_t> bytes, ReadFileBytes(out));
  std::error_code ec;
  fs::remove(out, ec);
  return std::string(bytes.begin(), bytes.end());
}

Status LoadSideInfo(const std::vector<std::string>& profiles, const std::string& model_dir, bool quiet) {
  for (const std::string& path : profiles) {
    SEQKV_ASSIGN_OR_RETURN(SeqProfile p, SeqProfile::Load(path));
    auto shared = std::make_shared<const SeqProfile>(std::move(p));
    if (!quiet) std::fprintf(stderr, "profile %s: %s\n", path.c_str(), shared->Id().c_str());
    SeqResources::Default().AddProfile(std::move(shared));
  }
  if (!model_dir.empty()) {
    SEQKV_ASSIGN_OR_RETURN(auto model, KvModel::Load(model_dir));
    SeqResources::Default().AddModel(std::move(model));
  }
  return Status::Ok();
}

Result<EvalResult> RunEval(const EvalOptions& opts, std::ostream* progress) {
  EvalResult result;
  std::error_code ec;
  SEQKV_ASSIGN_OR_RETURN(result.files, CollectDumps(opts.inputs));

  std::vector<std::unique_ptr<Codec>> codecs;
  for (const std::string& s : opts.codecs) {
    SEQKV_ASSIGN_OR_RETURN(auto c, MakeCodec(s));
    codecs.push_back(std::move(c));
  }
  std::string work_dir;
  if (opts.quality) {
    std::random_device rd;
    work_dir = (fs::temp_directory_path() / ("seqkv-eval-" + std::to_string(rd()))).string();
    fs::create_directories(work_dir, ec);
    if (ec) return Unavailable("cannot create " + work_dir);
  }
  std::vector<std::pair<std::string, std::string>> pairs;  // for quality
  std::vector<size_t> pair_index;                          // into per_file
  size_t step = 0, steps = result.files.size() * codecs.size();
  for (const std::string& file : result.files) {
    SEQKV_ASSIGN_OR_RETURN(KvDump dump, ReadKvDump(file));
    for (size_t ci = 0; ci < codecs.size(); ++ci) {
      ++step;
      std::string name = fs::path(file).filename().string();
      *progress << "[" << step << "/" << steps << "] " << name << " " << codecs[ci]->Spec() << "\n" << std::flush;
      Chunk recon;
      auto m = RoundTrip(dump.chunk, *codecs[ci], &recon, opts.chunk_tokens);
      if (!m.ok()) return m.status().WithContext(name + " with " + codecs[ci]->Spec());
      m->file = name;
      if (opts.quality && !m->recompute_needed) {
        std::string out = work_dir + "/c" + std::to_string(ci) + "-" + name;
        SEQKV_RETURN_IF_ERROR(WriteSafetensors(out, KvDumpToSafetensors(recon, dump.file)));
        pairs.emplace_back(file, out);
        pair_index.push_back(result.per_file.size());
      }
      result.per_file.push_back(std::move(m).value());
    }
  }
  if (opts.quality && !pairs.empty()) {
    *progress << "quality: running the model over " << pairs.size() << " reconstructions\n" << std::flush;
    auto q = RunQuality(pairs, opts, work_dir);
    fs::remove_all(work_dir, ec);
    if (!q.ok()) return q.status();
    for (size_t i = 0; i < pairs.size(); ++i) result.per_file[pair_index[i]].quality = (*q)[i];
  } else if (opts.quality) {
    fs::remove_all(work_dir, ec);
  }
  for (size_t ci = 0; ci < codecs.size(); ++ci) {
    EvalRow row;
    row.codec = codecs[ci]->Spec();
    size_t n = 0, nq = 0;
    for (size_t i = ci; i < result.per_file.size(); i += codecs.size()) {
      const RoundTripMetrics& m = result.per_file[i];
      ++n;
      row.bits_per_element += m.bits_per_element;
      row.bits_per_token += m.bits_per_token;
      row.ratio += m.ratio;
      row.k_rel_mse += m.k_rel_mse;
      row.v_rel_mse += m.v_rel_mse;
      row.k_max_err = std::max(row.k_max_err, m.k_max_err);
      row.v_max_err = std::max(row.v_max_err, m.v_max_err);
      row.encode_mb_s += m.encode_mb_s;
      row.decode_mb_s += m.decode_mb_s;
      row.recompute_needed = m.recompute_needed;
      if (m.seq) {
        row.has_seq = true;
        row.proxy += m.seq->proxy;
        row.lossless_fallbacks += m.seq->lossless_fallback ? 1 : 0;
        row.guardrail_raised += m.seq->guardrail_raised ? 1 : 0;
        if (row.layer_bits.size() < m.seq->layer_bits.size()) row.layer_bits.resize(m.seq->layer_bits.size(), 0.0);
        for (size_t l = 0; l < m.seq->layer_bits.size(); ++l) row.layer_bits[l] += m.seq->layer_bits[l];
      }
      if (m.quality) {
        ++nq;
        row.kl_nats += m.quality->kl_nats;
        row.top1_agreement += m.quality->top1_agreement;
        row.delta_ce_bits += m.quality->delta_ce_bits;
      }
    }
    for (double* v : {&row.bits_per_element, &row.bits_per_token, &row.ratio, &row.k_rel_mse, &row.v_rel_mse,
                      &row.encode_mb_s, &row.decode_mb_s}) {
      *v /= double(n);
    }
    if (row.has_seq) {
      row.proxy /= double(n);
      for (double& b : row.layer_bits) b /= double(n);
    }
    if (nq > 0) {
      row.has_quality = true;
      row.kl_nats /= double(nq);
      row.top1_agreement /= double(nq);
      row.delta_ce_bits /= double(nq);
    }
    result.summary.push_back(row);
  }
  return result;
}

nlohmann::json EvalRowJson(const EvalRow& r) {
  json j = {{"codec", r.codec},
            {"bits_per_element", r.bits_per_element},
            {"bits_per_token", r.bits_per_token},
            {"ratio", r.ratio},
            {"encode_mb_s", r.encode_mb_s},
            {"recompute_needed", r.recompute_needed}};
  if (!r.recompute_needed) {
    j["k_rel_mse"] = r.k_rel_mse;
    j["v_rel_mse"] = r.v_rel_mse;
    j["k_max_err"] = r.k_max_err;
    j["v_max_err"] = r.v_max_err;
    j["decode_mb_s"] = r.decode_mb_s;
  }
  if (r.has_seq) {
    j["seq"] = {{"proxy_kl", r.proxy},
                {"layer_bits_per_element", r.layer_bits},
                {"lossless_fallbacks", r.lossless_fallbacks},
                {"guardrail_raised", r.guardrail_raised}};
  }
  if (r.has_quality) {
    j["kl_nats"] = r.kl_nats;
    j["top1_agreement"] = r.top1_agreement;
    j["delta_ce_bits"] = r.delta_ce_bits;
  }
  return j;
}

}  // namespace seqkv::ctl
