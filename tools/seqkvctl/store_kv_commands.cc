// `seqkvctl kv put|get` and `seqkvctl lookup`: KV dumps (safetensors, as in
// ../shared/kvdata) into and out of the store, chunked and keyed as the
// client does for an inference engine.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <iostream>

#include "seqkv/codec/dtype.h"
#include "seqkv/codec/safetensors.h"
#include "store_ctl.h"

namespace seqkv::ctl {
namespace {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

struct KvFlags {
  NamespaceFlags ns;
  std::vector<std::string> files;
  std::string out;
  bool pin = false;
  bool no_skip = false;
  bool compare = false;
};

// Bit-exactness and the largest absolute difference of two equal-shape tensors.
void Compare(DType dtype, std::span<const uint8_t> a, std::span<const uint8_t> b, bool* exact, double* max_err) {
  *exact = a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin());
  *max_err = 0;
  if (a.size() != b.size()) {
    *max_err = INFINITY;
    return;
  }
  const size_t n = a.size() / DTypeSize(dtype);
  std::vector<float> fa(n), fb(n);
  ToFloat(dtype, a.data(), n, fa.data());
  ToFloat(dtype, b.data(), n, fb.data());
  for (size_t i = 0; i < n; ++i) *max_err = std::max<double>(*max_err, std::fabs(fa[i] - fb[i]));
}

void KvPut(StoreCtl* ctl, const KvFlags& flags) {
  auto client = ctl->Connect();
  if (!client.ok()) return ctl->Fail(client.status());
  json files = json::array();
  uint64_t total_sent = 0, total_raw = 0, total_chunks = 0, total_stored = 0, total_present = 0;
  json ns_json;
  for (const std::string& file : flags.files) {
    Result<KvDump> dump = ReadKvDump(file);
    if (!dump.ok()) return ctl->Fail(dump.status().WithContext(file));
    Result<NamespaceFields> fields = flags.ns.Resolve(DTypeName(dump->chunk.dtype));
    if (!fields.ok()) return ctl->Fail(fields.status());
    ns_json = {{"id", NamespaceId(*fields).ToHex()}, {"fields", NamespaceJson(*fields)}};
    client::PutPrefixOptions options;
    options.pin = flags.pin;
    options.skip_present = !flags.no_skip;
    options.progress = [&file](uint32_t done, uint32_t total) {
      Progress("kv put " + file + ": " + std::to_string(done) + "/" + std::to_string(total) + " chunks", false);
    };
    Clock::time_point start = Clock::now();
    Result<client::PutPrefixResult> put = (*client)->PutPrefix(*fields, client::KvView::Of(dump->chunk), options);
    if (!put.ok()) return ctl->Fail(put.status().WithContext(file));
    double seconds = Seconds(start);
    char line[512];
    std::snprintf(line, sizeof line,
                  "kv put %s: %u tokens, %u full chunks: %u stored, %u already present; sent %s (raw %s) in %.2f s",
                  file.c_str(), dump->chunk.shape.tokens, put->chunks, put->stored, put->already_present,
                  HumanBytes(put->sent_bytes).c_str(), HumanBytes(put->raw_bytes).c_str(), seconds);
    Progress(line, true);
    files.push_back({{"file", file}, {"tokens", dump->chunk.shape.tokens}, {"chunks", put->chunks},
                     {"stored", put->stored}, {"already_present", put->already_present},
                     {"sent_bytes", put->sent_bytes}, {"raw_bytes", put->raw_bytes}, {"seconds", seconds}});
    total_sent += put->sent_bytes;
    total_raw += put->raw_bytes;
    total_chunks += put->chunks;
    total_stored += put->stored;
    total_present += put->already_present;
  }
  if (ctl->json) {
    std::cout << json{{"namespace", ns_json}, {"files", files}, {"chunks", total_chunks}, {"stored", total_stored},
                      {"already_present", total_present}, {"sent_bytes", total_sent}, {"raw_bytes", total_raw}}
                     .dump(2)
              << "\n";
  } else {
    std::printf("put %llu chunks: %llu stored, %llu already present; sent %s for %s of KV\n",
                static_cast<unsigned long long>(total_chunks), static_cast<unsigned long long>(total_stored),
                static_cast<unsigned long long>(total_present), HumanBytes(total_sent).c_str(),
                HumanBytes(total_raw).c_str());
  }
}

void KvGet(StoreCtl* ctl, const KvFlags& flags) {
  const std::string& file = flags.files.front();
  Result<KvDump> dump = ReadKvDump(file);
  if (!dump.ok()) return ctl->Fail(dump.status().WithContext(file));
  Result<NamespaceFields> fields = flags.ns.Resolve(DTypeName(dump->chunk.dtype));
  if (!fields.ok()) return ctl->Fail(fields.status());
  auto client = ctl->Connect();
  if (!client.ok()) return ctl->Fail(client.status());
  Progress("kv get " + file + ": looking up " + std::to_string(dump->chunk.shape.tokens) + " tokens", false);
  Clock::time_point start = Clock::now();
  Result<client::GetPrefixResult> got = (*client)->GetPrefix(*fields, dump->chunk.tokens);
  if (!got.ok()) return ctl->Fail(got.status().WithContext(file));
  double seconds = Seconds(start);
  const uint32_t tokens = got->kv.shape.tokens;
  json out = {{"file", file}, {"requested_tokens", dump->chunk.shape.tokens}, {"chunks", got->chunks},
              {"tokens", tokens}, {"seconds", seconds}};
  if (got->chunks > 0 && !flags.out.empty()) {
    Status written = WriteSafetensors(flags.out, KvDumpToSafetensors(got->kv, dump->file));
    if (!written.ok()) return ctl->Fail(written.WithContext(flags.out));
    out["out"] = flags.out;
  }
  if (got->chunks > 0 && flags.compare) {
    Result<Chunk> original = client::SliceKv(client::KvView::Of(dump->chunk), 0, tokens);
    if (!original.ok()) return ctl->Fail(original.status());
    bool k_exact = false, v_exact = false;
    double k_err = 0, v_err = 0;
    Compare(got->kv.dtype, got->kv.k, original->k, &k_exact, &k_err);
    Compare(got->kv.dtype, got->kv.v, original->v, &v_exact, &v_err);
    out["bit_exact"] = k_exact && v_exact && got->kv.tokens == original->tokens;
    out["k_max_abs_err"] = k_err;
    out["v_max_abs_err"] = v_err;
  }
  char line[512];
  std::snprintf(line, sizeof line, "kv get %s: %u of %u tokens stored (%u chunks) in %.2f s%s%s", file.c_str(), tokens,
                dump->chunk.shape.tokens, got->chunks, seconds, out.contains("out") ? ", written to " : "",
                out.contains("out") ? flags.out.c_str() : "");
  Progress(line, true);
  if (ctl->json) {
    std::cout << out.dump(2) << "\n";
  } else if (out.contains("bit_exact")) {
    std::printf("bit-exact: %s (max abs err K %.4g, V %.4g)\n", out["bit_exact"].get<bool>() ? "yes" : "no",
                out["k_max_abs_err"].get<double>(), out["v_max_abs_err"].get<double>());
  }
  if (got->chunks == 0) {
    std::cerr << "kv get " << file << ": no stored prefix\n";
    *ctl->exit_code = 1;
  }
}

void Lookup(StoreCtl* ctl, const KvFlags& flags) {
  auto client = ctl->Connect();
  if (!client.ok()) return ctl->Fail(client.status());
  json files = json::array();
  for (const std::string& file : flags.files) {
    Result<KvDump> dump = ReadKvDump(file);
    if (!dump.ok()) return ctl->Fail(dump.status().WithContext(file));
    Result<NamespaceFields> fields = flags.ns.Resolve(DTypeName(dump->chunk.dtype));
    if (!fields.ok()) return ctl->Fail(fields.status());
    std::vector<Key128> keys = client::Client::Keys(*fields, dump->chunk.tokens);
    uint32_t prefix = 0;
    Result<client::LookupResult> r = (*client)->Lookup(NamespaceId(*fields), keys);
    if (r.ok()) {
      prefix = r->prefix_chunks;
    } else if (r.status().code() != StatusCode::kNotFound) {
      return ctl->Fail(r.status().WithContext(file));
    }
    json key_list = json::array();
    for (const Key128& k : keys) key_list.push_back(k.ToHex());
    files.push_back({{"file", file}, {"namespace_id", NamespaceId(*fields).ToHex()}, {"chunks", keys.size()},
                     {"prefix_chunks", prefix}, {"hit_tokens", uint64_t{prefix} * fields->chunk_tokens},
                     {"keys", key_list}});
    if (!ctl->json) {
      std::printf("%s: %u of %zu chunks stored (%u tokens)\n", file.c_str(), prefix, keys.size(),
                  prefix * fields->chunk_tokens);
    }
  }
  if (ctl->json) std::cout << files.dump(2) << "\n";
}

}  // namespace

void RegisterLookupCommand(CLI::App& app, StoreCtl* ctl) {
  static KvFlags flags;
  CLI::App* lookup = app.add_subcommand("lookup", "longest stored prefix of the token ids of KV dumps");
  AddCommonOptions(lookup, ctl);
  flags.ns.AddTo(lookup);
  lookup->add_option("DUMP", flags.files, "KV dump files (safetensors)")->required()->check(CLI::ExistingFile);
  lookup->callback([ctl] { Lookup(ctl, flags); });
}

void RegisterKvCommands(CLI::App& app, StoreCtl* ctl) {
  CLI::App* kv = app.add_subcommand("kv", "put and get KV dumps");
  kv->require_subcommand(1);

  static KvFlags put_flags;
  CLI::App* put = kv->add_subcommand("put", "store the full chunks of KV dumps (skipping those already stored)");
  AddCommonOptions(put, ctl);
  put_flags.ns.AddTo(put);
  put->add_option("DUMP", put_flags.files, "KV dump files (safetensors)")->required()->check(CLI::ExistingFile);
  put->add_flag("--pin", put_flags.pin, "pin the chunks (never evicted until unpinned)");
  put->add_flag("--no-skip", put_flags.no_skip,
                "send every chunk, even those already stored (the server deduplicates them)");
  put->callback([ctl] { KvPut(ctl, put_flags); });

  static KvFlags get_flags;
  CLI::App* get = kv->add_subcommand("get", "fetch the longest stored prefix of a dump's token ids");
  AddCommonOptions(get, ctl);
  get_flags.ns.AddTo(get);
  get->add_option("DUMP", get_flags.files, "KV dump whose token ids to look up")
      ->required()
      ->expected(1)
      ->check(CLI::ExistingFile);
  get->add_option("--out", get_flags.out, "write the prefix as a KV dump (safetensors)");
  get->add_flag("--compare", get_flags.compare, "compare the prefix with the dump's own K/V");
  get->callback([ctl] { KvGet(ctl, get_flags); });
}

}  // namespace seqkv::ctl
