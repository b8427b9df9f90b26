#include "metrics.h"

#include <prometheus/counter.h>
#include <prometheus/gauge.h>
#include <prometheus/registry.h>

#include <exception>
#include <string>

namespace seqkv::server::internal {
namespace {

constexpr const char* kTierLabels[kTierCount] = {"dram", "disk"};

}  // namespace

Result<std::unique_ptr<StoreMetrics>> StoreMetrics::Create(prometheus::Registry* registry) {
  std::unique_ptr<StoreMetrics> m(new StoreMetrics());
  if (registry == nullptr) return m;
  try {
    auto counter = [&](const std::string& name, const std::string& help) -> auto& {
      return prometheus::BuildCounter().Name(name).Help(help).Register(*registry);
    };
    auto gauge = [&](const std::string& name, const std::string& help) -> auto& {
      return prometheus::BuildGauge().Name(name).Help(help).Register(*registry);
    };
    m->lookup_tokens_ = &counter("seqkv_lookup_tokens_total", "Tokens asked for by lookups").Add({});
    m->hit_tokens_ =
        &counter("seqkv_hit_tokens_total", "Looked-up tokens found in the usable prefix").Add({});
    auto& evictions = counter("seqkv_evictions_total", "Chunks evicted, by tier");
    auto& bytes = gauge("seqkv_bytes", "Chunk bytes by tier; logical counts duplicate puts");
    auto& chunks = gauge("seqkv_chunks", "Chunks by tier");
    auto& budget = gauge("seqkv_budget_bytes", "Byte budget by tier");
    for (int t = 0; t < kTierCount; ++t) {
      m->evictions_[t] = &evictions.Add({{"tier", kTierLabels[t]}});
      m->bytes_[t][0] = &bytes.Add({{"tier", kTierLabels[t]}, {"kind", "logical"}});
      m->bytes_[t][1] = &bytes.Add({{"tier", kTierLabels[t]}, {"kind", "physical"}});
      m->chunks_[t] = &chunks.Add({{"tier", kTierLabels[t]}});
      m->budget_[t] = &budget.Add({{"tier", kTierLabels[t]}});
    }
    m->promotions_ = &counter("seqkv_promotions_total", "Chunks copied from disk to DRAM").Add({});
    m->checksum_failures_ =
        &counter("seqkv_checksum_failures_total", "Stored chunks dropped for a bad checksum").Add({});
    m->dedup_ratio_ =
        &gauge("seqkv_dedup_ratio", "Logical / physical bytes on disk (1 = no sharing)").Add({});
    m->compression_ratio_ = &gauge("seqkv_compression_ratio", "Raw KV bytes / stored bytes on disk").Add({});
  } catch (const std::exception& e) {
    return InvalidArgument(std::string("registering store metrics: ") + e.what());
  }
  m->enabled_ = true;
  return m;
}

void StoreMetrics::AddLookup(uint64_t requested_tokens, uint64_t hit_tokens) {
  if (!enabled_) return;
  lookup_tokens_->Increment(static_cast<double>(requested_tokens));
  hit_tokens_->Increment(static_cast<double>(hit_tokens));
}

void StoreMetrics::AddEvictions(TierIndex tier, uint64_t chunks) {
  if (enabled_ && chunks > 0) evictions_[tier]->Increment(static_cast<double>(chunks));
}

void StoreMetrics::AddPromotions(uint64_t count) {
  if (enabled_ && count > 0) promotions_->Increment(static_cast<double>(count));
}

void StoreMetrics::AddChecksumFailures(uint64_t count) {
  if (enabled_ && count > 0) checksum_failures_->Increment(static_cast<double>(count));
}

void StoreMetrics::Publish(const StoreStats& stats) {
  if (!enabled_) return;
  const TierStats* tiers[kTierCount] = {&stats.dram, &stats.disk};
  for (int t = 0; t < kTierCount; ++t) {
    bytes_[t][0]->Set(static_cast<double>(tiers[t]->logical_bytes));
    bytes_[t][1]->Set(static_cast<double>(tiers[t]->physical_bytes));
    chunks_[t]->Set(static_cast<double>(tiers[t]->chunks));
    budget_[t]->Set(static_cast<double>(tiers[t]->budget_bytes));
  }
  dedup_ratio_->Set(stats.dedup_ratio);
  compression_ratio_->Set(stats.compression_ratio);
}

}  // namespace seqkv::server::internal
