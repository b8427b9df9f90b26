// Deletion, eviction, pins and leases, stats and inspection.
#include <spdlog/spdlog.h>

#include <algorithm>

#include "store_impl.h"

namespace seqkv::server::internal {

bool StoreImpl::SettledSubtreeLocked(Lock& lock, const Key128& ns, const Key128& key,
                                     std::vector<Node*>* out) {
  for (;;) {
    Node* node = index_.FindVisible(ns, key);
    if (node == nullptr) return false;
    out->clear();
    index_.CollectSubtree(node, out);
    bool pending = std::any_of(out->begin(), out->end(), [](Node* n) { return n->pending; });
    if (!pending) return true;
    settled_cv_.wait(lock);
  }
}

Status StoreImpl::EraseLocked(const std::vector<Node*>& nodes, DeleteResult* result) {
  std::vector<ChunkAddress> all;
  std::vector<ChunkAddress> cached;
  bool held = false;
  for (Node* node : nodes) {
    all.push_back(node->record.address());
    if (node->in_dram) cached.push_back(node->record.address());
    held = held || node->holders > 0;
  }
  // Disk first: if it fails the index still matches the disk.
  SEQKV_RETURN_IF_ERROR(disk_->Erase(all));
  SEQKV_RETURN_IF_ERROR(dram_->Erase(cached));
  if (held) {
    // A forced delete of held chunks: forget them in their leases, so a late
    // Release cannot drop a hold taken on a re-put chunk of the same key.
    for (auto& [id, addresses] : leases_) {
      std::erase_if(addresses,
                    [&](const ChunkAddress& a) { return std::find(all.begin(), all.end(), a) != all.end(); });
    }
  }
  for (Node* node : nodes) {
    result->chunks += 1;
    result->bytes += node->record.size_bytes;
    index_.Remove(node);
  }
  return Status::Ok();
}

template <typename Enough>
Result<EvictResult> StoreImpl::EvictLocked(TierIndex tier, const Key128* ns, Enough enough) {
  EvictResult result;
  std::vector<ChunkAddress> erased;
  while (!enough(result)) {
    Node* victim = index_.OldestEvictable(tier, ns);
    if (victim == nullptr) break;
    const ChunkAddress address = victim->record.address();
    result.chunks += 1;
    result.bytes += victim->record.size_bytes;
    if (victim->in_dram) SEQKV_RETURN_IF_ERROR(dram_->Erase({&address, 1}));
    if (tier == kDramIndex) {
      index_.SetInDram(victim, false);
    } else {
      erased.push_back(address);
      index_.Remove(victim);  // its parent may now be a candidate
    }
  }
  evictions_[tier] += result.chunks;
  metrics_->AddEvictions(tier, result.chunks);
  if (!erased.empty()) {
    Status s = disk_->Erase(erased);
    if (!s.ok()) {
      // The chunks are gone from the index; they come back on restart.
      spdlog::error("event=evicted_erase_failed count={} error=\"{}\"", erased.size(), s.ToString());
      return s.WithContext("evict");
    }
  }
  return result;
}

Status StoreImpl::MakeDiskRoomLocked(uint64_t bytes) {
  const uint64_t budget = options_.disk_budget_bytes;
  if (bytes > budget) {
    return ResourceExhausted("chunk needs " + std::to_string(bytes) + " bytes, more than the disk budget " +
                             std::to_string(budget));
  }
  auto fits = [&](const EvictResult&) { return index_.totals(kDiskIndex).physical_bytes + bytes <= budget; };
  SEQKV_RETURN_IF_ERROR(EvictLocked(kDiskIndex, nullptr, fits).status());
  if (!fits(EvictResult{})) {
    return ResourceExhausted("disk budget " + std::to_string(budget) +
                             " bytes is full of pinned, held or in-flight chunks");
  }
  return Status::Ok();
}

void StoreImpl::CacheInDramLocked(Node* node, const ChunkBytes& bytes) {
  const uint64_t budget = options_.dram_budget_bytes;
  if (node->in_dram || node->record.size_bytes > budget) return;
  if (!dram_->Write(node->record, bytes).ok()) return;
  index_.SetInDram(node, true);
  auto fits = [&](const EvictResult&) { return index_.totals(kDramIndex).physical_bytes <= budget; };
  Status s = EvictLocked(kDramIndex, nullptr, fits).status();
  if (!s.ok()) spdlog::warn("event=dram_eviction_failed error=\"{}\"", s.ToString());
}

Result<DeleteResult> StoreImpl::Delete(const Key128& ns, const Key128& key, const DeleteOptions& options) {
  Lock lock(mu_);
  SEQKV_RETURN_IF_ERROR(NamespaceLocked(ns).status());
  std::vector<Node*> subtree;
  if (!SettledSubtreeLocked(lock, ns, key, &subtree)) {
    return NotFound("chunk " + key.ToHex() + " not present");
  }
  if (!options.force) {
    for (Node* node : subtree) {
      if (node->record.pins > 0 || node->holders > 0) {
        return FailedPrecondition("chunk " + node->record.key.ToHex() + " (in the subtree of " + key.ToHex() +
                                  ") is pinned or held; use force");
      }
    }
  }
  DeleteResult result;
  SEQKV_RETURN_IF_ERROR(EraseLocked(subtree, &result));
  PublishLocked();
  return result;
}

Status StoreImpl::Pin(const Key128& ns, const Key128& key) {
  std::lock_guard<std::mutex> lock(mu_);
  SEQKV_RETURN_IF_ERROR(NamespaceLocked(ns).status());
  Node* node = index_.FindVisible(ns, key);
  if (node == nullptr) return NotFound("chunk " + key.ToHex() + " not present");
  index_.AddPin(node, +1);
  Status s = disk_->UpdateRecord(node->record, /*durable=*/true);
  if (!s.ok()) index_.AddPin(node, -1);
  return s;
}

Status StoreImpl::Unpin(const Key128& ns, const Key128& key) {
  std::lock_guard<std::mutex> lock(mu_);
  SEQKV_RETURN_IF_ERROR(NamespaceLocked(ns).status());
  Node* node = index_.FindVisible(ns, key);
  if (node == nullptr) return NotFound("chunk " + key.ToHex() + " not present");
  if (node->record.pins == 0) return FailedPrecondition("chunk " + key.ToHex() + " is not pinned");
  index_.AddPin(node, -1);
  Status s = disk_->UpdateRecord(node->record, /*durable=*/true);
  if (!s.ok()) index_.AddPin(node, +1);
  return s;
}

Result<Lease> StoreImpl::Acquire(const Key128& ns, std::span<const Key128> keys) {
  std::lock_guard<std::mutex> lock(mu_);
  SEQKV_RETURN_IF_ERROR(NamespaceLocked(ns).status());
  std::vector<Node*> prefix = UsablePrefixLocked(ns, keys);
  if (prefix.empty()) return Lease{};
  const uint64_t id = next_lease_id_++;
  std::vector<ChunkAddress>& addresses = leases_[id];
  for (Node* node : prefix) {
    index_.Touch(node);
    index_.AddHolder(node, +1);
    addresses.push_back(node->record.address());
  }
  return Lease{id, static_cast<uint32_t>(prefix.size())};
}

Status StoreImpl::Release(uint64_t lease_id) {
  if (lease_id == 0) return Status::Ok();  // the empty lease
  std::lock_guard<std::mutex> lock(mu_);
  auto it = leases_.find(lease_id);
  if (it == leases_.end()) return NotFound("unknown lease " + std::to_string(lease_id));
  for (const ChunkAddress& address : it->second) {
    Node* node = index_.Find(address.ns, address.key);
    if (node != nullptr && node->holders > 0) index_.AddHolder(node, -1);
  }
  leases_.erase(it);
  return Status::Ok();
}

StoreStats StoreImpl::StatsLocked() const {
  StoreStats stats = counters_;
  const TierTotals& dram = index_.totals(kDramIndex);
  const TierTotals& disk = index_.totals(kDiskIndex);
  stats.dram = {dram.chunks, dram.logical_bytes, dram.physical_bytes, options_.dram_budget_bytes,
                evictions_[kDramIndex]};
  stats.disk = {disk.chunks, disk.logical_bytes, disk.physical_bytes, options_.disk_budget_bytes,
                evictions_[kDiskIndex]};
  stats.namespaces = index_.namespaces().size();
  stats.raw_kv_bytes = index_.raw_kv_bytes();
  if (disk.physical_bytes > 0) {
    stats.dedup_ratio = static_cast<double>(disk.logical_bytes) / disk.physical_bytes;
    stats.compression_ratio = static_cast<double>(stats.raw_kv_bytes) / disk.physical_bytes;
  } else {
    stats.dedup_ratio = 1.0;
    stats.compression_ratio = 1.0;
  }
  return stats;
}

void StoreImpl::PublishLocked() { metrics_->Publish(StatsLocked()); }

Result<StoreStats> StoreImpl::Stats() {
  const uint64_t footprint = disk_->used_bytes();  // RocksDB properties: no lock needed
  std::lock_guard<std::mutex> lock(mu_);
  StoreStats stats = StatsLocked();
  stats.disk_footprint_bytes = footprint;
  return stats;
}

Result<EvictResult> StoreImpl::Evict(const EvictOptions& options) {
  TierIndex tier;
  if (options.tier == TierKind::kDram) {
    tier = kDramIndex;
  } else if (options.tier == TierKind::kDisk) {
    tier = kDiskIndex;
  } else {
    return InvalidArgument("evict: tier must be dram or disk");
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (options.ns) SEQKV_RETURN_IF_ERROR(NamespaceLocked(*options.ns).status());
  auto enough = [&](const EvictResult& r) { return r.bytes >= options.bytes; };
  Result<EvictResult> result = EvictLocked(tier, options.ns ? &*options.ns : nullptr, enough);
  PublishLocked();
  return result;
}

Status StoreImpl::Compact() { return disk_->Compact(); }

Result<ChunkInfo> StoreImpl::Inspect(const Key128& ns, const Key128& key) {
  std::lock_guard<std::mutex> lock(mu_);
  SEQKV_RETURN_IF_ERROR(NamespaceLocked(ns).status());
  Node* node = index_.FindVisible(ns, key);
  if (node == nullptr) return NotFound("chunk " + key.ToHex() + " not present");
  const ChunkRecord& r = node->record;
  ChunkInfo info;
  info.ns = r.ns;
  info.key = r.key;
  info.parent = r.parent;
  for (Node* child : node->children) {
    if (child->visible()) info.children.push_back(child->record.key);
  }
  std::sort(info.children.begin(), info.children.end());
  info.depth = r.depth;
  info.size_bytes = r.size_bytes;
  info.raw_kv_bytes = r.raw_kv_bytes;
  info.in_dram = node->in_dram;
  info.on_disk = node->on_disk;
  info.tier = node->in_dram ? TierKind::kDram : TierKind::kDisk;
  info.pins = r.pins;
  info.holders = node->holders;
  info.puts = r.puts;
  info.last_access_unix_ms = node->last_access_ms;
  info.shape = r.shape;
  info.dtype = r.dtype;
  info.codec_id = r.codec_id;
  info.codec_spec = r.codec_spec;
  info.flags = r.flags;
  info.first_position = r.first_position;
  info.header_bytes = r.header_bytes;
  info.sections = r.sections;
  return info;
}

}  // namespace seqkv::server::internal
