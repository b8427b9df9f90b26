// The DRAM tier: a hash map of shared, immutable payloads. Reads hand out the
// shared pointer, so a DRAM hit copies nothing; an erased payload stays alive
// until its last reader drops it.
#include <mutex>
#include <unordered_map>

#include "seqkv/server/tier.h"

namespace seqkv::server {
namespace {

class DramTier final : public ChunkTier {
 public:
  TierKind kind() const override { return TierKind::kDram; }

  Status Write(const ChunkRecord& record, const ChunkBytes& bytes) override {
    if (!bytes) return InvalidArgument("dram tier: null payload");
    std::lock_guard<std::mutex> lock(mu_);
    auto [it, inserted] = payloads_.try_emplace(record.address(), bytes);
    if (!inserted) {
      used_bytes_ -= it->second->size();
      it->second = bytes;
    }
    used_bytes_ += bytes->size();
    return Status::Ok();
  }

  Result<ChunkBytes> Read(const ChunkAddress& address) override {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = payloads_.find(address);
    if (it == payloads_.end()) return NotFound("chunk not in dram tier");
    return it->second;
  }

  Status Erase(std::span<const ChunkAddress> addresses) override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const ChunkAddress& address : addresses) {
      auto it = payloads_.find(address);
      if (it == payloads_.end()) continue;
      used_bytes_ -= it->second->size();
      payloads_.erase(it);
    }
    return Status::Ok();
  }

  uint64_t used_bytes() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return used_bytes_;
  }

  uint64_t chunks() const override {
    std::lock_guard<std::mutex> lock(mu_);
    return payloads_.size();
  }

 private:
  mutable std::mutex mu_;
  std::unordered_map<ChunkAddress, ChunkBytes, ChunkAddressHash> payloads_;
  uint64_t used_bytes_ = 0;
};

}  // namespace

std::unique_ptr<ChunkTier> NewDramTier() { return std::make_unique<DramTier>(); }

}  // namespace seqkv::server
