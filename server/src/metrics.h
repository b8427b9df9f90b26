// The store's Prometheus metrics (names listed in docs/store.md).
//
// Counters are incremented where the events happen; gauges are set from a
// StoreStats snapshot after each mutation. With a null registry every call
// is a no-op. Thread-safe (prometheus-cpp metrics are atomic).
#pragma once

#include <cstdint>
#include <memory>

#include "prefix_index.h"
#include "seqkv/codec/status.h"
#include "seqkv/server/store.h"

namespace prometheus {
class Counter;
class Gauge;
class Registry;
}  // namespace prometheus

namespace seqkv::server::internal {

class StoreMetrics {
 public:
  // InvalidArgument if a family of the same name but another type is
  // already registered.
  static Result<std::unique_ptr<StoreMetrics>> Create(prometheus::Registry* registry);

  void AddLookup(uint64_t requested_tokens, uint64_t hit_tokens);
  void AddEvictions(TierIndex tier, uint64_t chunks);
  void AddPromotions(uint64_t count);
  void AddChecksumFailures(uint64_t count);
  void Publish(const StoreStats& stats);

 private:
  StoreMetrics() = default;

  bool enabled_ = false;
  prometheus::Counter* lookup_tokens_ = nullptr;
  prometheus::Counter* hit_tokens_ = nullptr;
  prometheus::Counter* evictions_[kTierCount] = {nullptr, nullptr};
  prometheus::Counter* promotions_ = nullptr;
  prometheus::Counter* checksum_failures_ = nullptr;
  // [tier][0 = logical, 1 = physical]
  prometheus::Gauge* bytes_[kTierCount][2] = {{nullptr, nullptr}, {nullptr, nullptr}};
  prometheus::Gauge* chunks_[kTierCount] = {nullptr, nullptr};
  prometheus::Gauge* budget_[kTierCount] = {nullptr, nullptr};
  prometheus::Gauge* dedup_ratio_ = nullptr;
  prometheus::Gauge* compression_ratio_ = nullptr;
};

}  // namespace seqkv::server::internal
