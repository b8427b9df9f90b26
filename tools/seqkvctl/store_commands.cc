// `seqkvctl [--server HOST:PORT] <command>`: the store's admin commands
// (status, stats, namespaces, inspect, evict, compact); `kv put/get` and
// `lookup` live in store_kv_commands.cc.
#include <cstdio>
#include <iostream>
#include <limits>

#include "commands.h"
#include "store_ctl.h"

namespace seqkv::ctl {
namespace {

using json = nlohmann::json;

json TierJson(const v1::TierStats& t) {
  return {{"chunks", t.chunks()},
          {"logical_bytes", t.logical_bytes()},
          {"physical_bytes", t.physical_bytes()},
          {"budget_bytes", t.budget_bytes()},
          {"evictions", t.evictions()}};
}

json StatsJson(const v1::StatsResponse& s) {
  double hit_rate = s.lookup_tokens() == 0 ? 0.0 : double(s.hit_tokens()) / double(s.lookup_tokens());
  return {{"logical_bytes", s.logical_bytes()},   {"physical_bytes", s.physical_bytes()},
          {"chunks", s.chunks()},                 {"namespaces", s.namespaces()},
          {"raw_kv_bytes", s.raw_kv_bytes()},     {"lookups", s.lookups()},
          {"lookup_tokens", s.lookup_tokens()},   {"hit_tokens", s.hit_tokens()},
          {"hit_rate", hit_rate},                 {"puts", s.puts()},
          {"dedup_puts", s.dedup_puts()},         {"gets", s.gets()},
          {"get_hits", s.get_hits()},             {"promotions", s.promotions()},
          {"checksum_failures", s.checksum_failures()},
          {"dedup_ratio", s.dedup_ratio()},       {"compression_ratio", s.compression_ratio()},
          {"dram", TierJson(s.dram())},           {"disk", TierJson(s.disk())}};
}

void PrintStats(const v1::StatsResponse& s) {
  auto row = [](const char* name, const std::string& value) { std::printf("%-20s %s\n", name, value.c_str()); };
  auto tier = [&](const char* name, const v1::TierStats& t) {
    std::printf("%-20s %llu chunks, %s of %s budget, %llu evictions\n", name,
                static_cast<unsigned long long>(t.chunks()), HumanBytes(t.physical_bytes()).c_str(),
                HumanBytes(t.budget_bytes()).c_str(), static_cast<unsigned long long>(t.evictions()));
  };
  double hit_rate = s.lookup_tokens() == 0 ? 0.0 : 100.0 * double(s.hit_tokens()) / double(s.lookup_tokens());
  char buf[128];
  row("chunks", std::to_string(s.chunks()));
  row("namespaces", std::to_string(s.namespaces()));
  row("logical bytes", HumanBytes(s.logical_bytes()) + " (" + std::to_string(s.logical_bytes()) + ")");
  row("physical bytes", HumanBytes(s.physical_bytes()) + " (" + std::to_string(s.physical_bytes()) + ")");
  row("raw KV bytes", HumanBytes(s.raw_kv_bytes()));
  std::snprintf(buf, sizeof buf, "%.3f", s.dedup_ratio());
  row("dedup ratio", buf);
  std::snprintf(buf, sizeof buf, "%.3f", s.compression_ratio());
  row("compression ratio", buf);
  std::snprintf(buf, sizeof buf, "%llu of %llu tokens (%.1f%%), %llu lookups",
                static_cast<unsigned long long>(s.hit_tokens()), static_cast<unsigned long long>(s.lookup_tokens()),
                hit_rate, static_cast<unsigned long long>(s.lookups()));
  row("lookup hits", buf);
  std::snprintf(buf, sizeof buf, "%llu (%llu deduplicated)", static_cast<unsigned long long>(s.puts()),
                static_cast<unsigned long long>(s.dedup_puts()));
  row("puts", buf);
  std::snprintf(buf, sizeof buf, "%llu (%llu hits, %llu promotions)", static_cast<unsigned long long>(s.gets()),
                static_cast<unsigned long long>(s.get_hits()), static_cast<unsigned long long>(s.promotions()));
  row("gets", buf);
  row("checksum failures", std::to_string(s.checksum_failures()));
  tier("dram tier", s.dram());
  tier("disk tier", s.disk());
}

std::string TierName(v1::Tier tier) {
  switch (tier) {
    case v1::TIER_DRAM: return "dram";
    case v1::TIER_DISK: return "disk";
    default: return "none";
  }
}

json InspectJson(const v1::InspectResponse& r) {
  auto hex = [](const std::string& bytes) {
    Result<Key128> key = wire::KeyFromBytes(bytes, "key");
    return key.ok() ? key->ToHex() : std::string();
  };
  json children = json::array();
  for (const std::string& c : r.children()) children.push_back(hex(c));
  return {{"namespace_id", hex(r.namespace_id())}, {"key", hex(r.key())},
          {"parent_key", r.parent_key().empty() ? json(nullptr) : json(hex(r.parent_key()))},
          {"children", children}, {"depth", r.depth()}, {"size_bytes", r.size_bytes()},
          {"raw_kv_bytes", r.raw_kv_bytes()}, {"tier", TierName(r.tier())}, {"in_dram", r.in_dram()},
          {"on_disk", r.on_disk()}, {"pins", r.pins()}, {"holders", r.holders()}, {"puts", r.puts()},
          {"last_access_unix_ms", r.last_access_unix_ms()},
          {"shape", {r.layers(), r.kv_heads(), r.tokens(), r.head_dim()}}, {"dtype", r.dtype()},
          {"codec_id", r.codec_id()}, {"codec_spec", r.codec_spec()}, {"flags", r.flags()},
          {"first_position", r.first_position()}, {"header_bytes", r.header_bytes()},
          {"sections", r.sections()}};
}

void RegisterAdminCommands(CLI::App& app, StoreCtl* ctl) {
  CLI::App* status = app.add_subcommand("status", "server status: version, address, data dir, uptime, size");
  AddCommonOptions(status, ctl);
  status->callback([ctl] {
    auto client = ctl->Connect();
    if (!client.ok()) return ctl->Fail(client.status());
    auto r = (*client)->ServerStatus();
    if (!r.ok()) return ctl->Fail(r.status());
    if (ctl->json) {
      std::cout << json{{"version", r->version()}, {"listen_address", r->listen_address()},
                        {"data_dir", r->data_dir()}, {"uptime_seconds", r->uptime_seconds()},
                        {"stats", StatsJson(r->stats())}}.dump(2) << "\n";
      return;
    }
    std::printf("seqkv-server %s at %s, data in %s, up %llu s\n", r->version().c_str(), r->listen_address().c_str(),
                r->data_dir().c_str(), static_cast<unsigned long long>(r->uptime_seconds()));
    std::printf("%llu chunks in %llu namespaces, %s stored\n", static_cast<unsigned long long>(r->stats().chunks()),
                static_cast<unsigned long long>(r->stats().namespaces()),
                HumanBytes(r->stats().physical_bytes()).c_str());
  });

  CLI::App* stats = app.add_subcommand("stats", "store statistics (table, or --json)");
  AddCommonOptions(stats, ctl);
  stats->callback([ctl] {
    auto client = ctl->Connect();
    if (!client.ok()) return ctl->Fail(client.status());
    auto r = (*client)->Stats();
    if (!r.ok()) return ctl->Fail(r.status());
    if (ctl->json) {
      std::cout << StatsJson(*r).dump(2) << "\n";
    } else {
      PrintStats(*r);
    }
  });

  CLI::App* namespaces = app.add_subcommand("namespaces", "list the registered namespaces");
  AddCommonOptions(namespaces, ctl);
  namespaces->callback([ctl] {
    auto client = ctl->Connect();
    if (!client.ok()) return ctl->Fail(client.status());
    auto r = (*client)->ListNamespaces();
    if (!r.ok()) return ctl->Fail(r.status());
    json out = json::array();
    if (!ctl->json) std::printf("%-32s  %-16s %-24s %6s %-10s %8s %12s\n", "id", "model", "codec", "chunk", "tenant",
                                "chunks", "bytes");
    for (const v1::NamespaceInfo& ns : r->namespaces()) {
      Result<Key128> id = wire::KeyFromBytes(ns.id(), "id");
      std::string hex = id.ok() ? id->ToHex() : "?";
      NamespaceFields f = wire::NamespaceFromProto(ns.fields());
      if (ctl->json) {
        out.push_back({{"id", hex}, {"fields", NamespaceJson(f)}, {"chunks", ns.chunks()},
                       {"logical_bytes", ns.logical_bytes()}, {"physical_bytes", ns.physical_bytes()}});
      } else {
        std::printf("%-32s  %-16s %-24s %6u %-10s %8llu %12s\n", hex.c_str(), f.model_name.c_str(),
                    f.codec_spec.c_str(), f.chunk_tokens, f.tenant_salt.empty() ? "-" : f.tenant_salt.c_str(),
                    static_cast<unsigned long long>(ns.chunks()), HumanBytes(ns.physical_bytes()).c_str());
      }
    }
    if (ctl->json) std::cout << out.dump(2) << "\n";
  });

  static std::string inspect_key, inspect_ns;
  CLI::App* inspect = app.add_subcommand("inspect", "show one chunk: place in the trie, tier, pins, header");
  AddCommonOptions(inspect, ctl);
  inspect->add_option("KEY", inspect_key, "chunk key (32 hex digits)")->required();
  inspect->add_option("--namespace", inspect_ns, "namespace id (default: search every namespace)");
  inspect->callback([ctl] {
    Result<Key128> key = Key128::FromHex(inspect_key);
    if (!key.ok()) return ctl->Fail(key.status());
    auto client = ctl->Connect();
    if (!client.ok()) return ctl->Fail(client.status());
    std::vector<Key128> candidates;
    if (!inspect_ns.empty()) {
      Result<Key128> ns = Key128::FromHex(inspect_ns);
      if (!ns.ok()) return ctl->Fail(ns.status().WithContext("--namespace"));
      candidates.push_back(*ns);
    } else {
      auto list = (*client)->ListNamespaces();
      if (!list.ok()) return ctl->Fail(list.status());
      for (const auto& ns : list->namespaces()) {
        Result<Key128> id = wire::KeyFromBytes(ns.id(), "id");
        if (id.ok()) candidates.push_back(*id);
      }
    }
    for (const Key128& ns : candidates) {
      auto r = (*client)->Inspect(ns, *key);
      if (r.ok()) {
        std::cout << InspectJson(*r).dump(2) << "\n";
        return;
      }
      if (r.status().code() != StatusCode::kNotFound) return ctl->Fail(r.status());
    }
    ctl->Fail(NotFound("chunk " + key->ToHex() + " is in no namespace"));
  });

  static std::string evict_bytes, evict_tier = "disk", evict_ns;
  CLI::App* evict = app.add_subcommand("evict", "evict least-recently-used unpinned leaves");
  AddCommonOptions(evict, ctl);
  evict->add_option("--bytes", evict_bytes, "bytes to free, e.g. 512MiB (default: everything evictable)");
  evict->add_option("--tier", evict_tier, "dram (drop cached copies) or disk (remove chunks)")
      ->check(CLI::IsMember({"dram", "disk"}))
      ->default_str("disk");
  evict->add_option("--namespace", evict_ns, "only this namespace id");
  evict->callback([ctl] {
    v1::EvictRequest request;
    request.set_tier(evict_tier == "dram" ? v1::TIER_DRAM : v1::TIER_DISK);
    request.set_bytes(std::numeric_limits<uint64_t>::max());
    if (!evict_bytes.empty()) {
      Result<uint64_t> bytes = ParseSize(evict_bytes);
      if (!bytes.ok()) return ctl->Fail(bytes.status().WithContext("--bytes"));
      request.set_bytes(*bytes);
    }
    if (!evict_ns.empty()) {
      Result<Key128> ns = Key128::FromHex(evict_ns);
      if (!ns.ok()) return ctl->Fail(ns.status().WithContext("--namespace"));
      request.set_namespace_id(wire::KeyToBytes(*ns));
    }
    auto client = ctl->Connect();
    if (!client.ok()) return ctl->Fail(client.status());
    auto r = (*client)->Evict(request);
    if (!r.ok()) return ctl->Fail(r.status());
    if (ctl->json) {
      std::cout << json{{"chunks", r->chunks()}, {"bytes", r->bytes()}}.dump(2) << "\n";
    } else {
      std::printf("evicted %llu chunks, %s from the %s tier\n", static_cast<unsigned long long>(r->chunks()),
                  HumanBytes(r->bytes()).c_str(), evict_tier.c_str());
    }
  });

  CLI::App* compact = app.add_subcommand("compact", "compact the disk tier (reclaims deleted space)");
  AddCommonOptions(compact, ctl);
  compact->callback([ctl] {
    auto client = ctl->Connect();
    if (!client.ok()) return ctl->Fail(client.status());
    Status s = (*client)->Compact();
    if (!s.ok()) return ctl->Fail(s);
    if (ctl->json) {
      std::cout << json{{"compacted", true}}.dump() << "\n";
    } else {
      std::printf("compacted\n");
    }
  });
}

}  // namespace

void RegisterStoreCommands(CLI::App& app, int* exit_code) {
  // Lives for the whole program: the callbacks run after parsing, from main().
  static StoreCtl ctl;
  ctl.exit_code = exit_code;
  app.add_option("--server", ctl.global_server, "seqkv-server address HOST:PORT for the store commands")
      ->default_str("127.0.0.1:50051")
      ->envname("SEQKV_SERVER");
  RegisterAdminCommands(app, &ctl);
  RegisterLookupCommand(app, &ctl);
  RegisterKvCommands(app, &ctl);
}

}  // namespace seqkv::ctl
