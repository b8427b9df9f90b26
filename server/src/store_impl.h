// StoreImpl: the Store interface over a PrefixIndex, a DRAM tier and a
// durable tier. Split by concern:
//   store.cc        Open, recovery, namespaces
//   store_data.cc   Lookup, Put, Get
//   store_admin.cc  Delete, Pin, Acquire/Release, Evict, Stats, Inspect
//
// Concurrency: one mutex guards the index, counters and leases. Payload
// writes and disk reads run outside it; a chunk being written is a pending
// node (invisible, not evictable, not deletable: Delete waits for it), so the
// index and RocksDB never disagree about a visible chunk. Record updates and
// erases (small, unsynced) run under the mutex so they are ordered.
#pragma once

#include <condition_variable>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>

#include "metrics.h"
#include "prefix_index.h"
#include "seqkv/server/store.h"
#include "seqkv/server/tier.h"

namespace seqkv::server::internal {

class StoreImpl final : public Store {
 public:
  StoreImpl(const StoreOptions& options, std::unique_ptr<ChunkTier> dram, std::unique_ptr<DurableTier> disk,
            std::unique_ptr<StoreMetrics> metrics);
  ~StoreImpl() override;

  // Rebuilds the index from the durable tier (called once by Open).
  Status Recover();

  Result<Key128> RegisterNamespace(const NamespaceFields& fields) override;
  Result<NamespaceInfo> GetNamespace(const Key128& ns) override;
  Result<std::vector<NamespaceInfo>> ListNamespaces() override;
  Result<DeleteResult> DeleteNamespace(const Key128& ns, const DeleteOptions& options) override;

  Result<LookupResult> Lookup(const Key128& ns, std::span<const Key128> keys,
                              const LookupOptions& options) override;
  Result<PutResult> Put(const Key128& ns, const std::optional<Key128>& parent, const Key128& key,
                        std::span<const uint8_t> chunk, const PutOptions& options) override;
  Result<ChunkBytes> Get(const Key128& ns, const Key128& key, const GetOptions& options) override;

  Result<DeleteResult> Delete(const Key128& ns, const Key128& key, const DeleteOptions& options) override;
  Status Pin(const Key128& ns, const Key128& key) override;
  Status Unpin(const Key128& ns, const Key128& key) override;
  Result<Lease> Acquire(const Key128& ns, std::span<const Key128> keys) override;
  Status Release(uint64_t lease_id) override;
  Result<StoreStats> Stats() override;
  Result<EvictResult> Evict(const EvictOptions& options) override;
  Status Compact() override;
  Result<ChunkInfo> Inspect(const Key128& ns, const Key128& key) override;

 private:
  using Lock = std::unique_lock<std::mutex>;

  // --- helpers; all require mu_ held ---
  Result<NamespaceState*> NamespaceLocked(const Key128& ns);
  // Visible nodes of the usable prefix of keys (unbroken parent chain).
  std::vector<Node*> UsablePrefixLocked(const Key128& ns, std::span<const Key128> keys);
  // Waits until no node under (ns, key) is pending, then collects the
  // subtree (children first). False if the chunk is not visible.
  bool SettledSubtreeLocked(Lock& lock, const Key128& ns, const Key128& key, std::vector<Node*>* out);
  // Removes nodes (children before parents) from both tiers and the index.
  Status EraseLocked(const std::vector<Node*>& nodes, DeleteResult* result);
  // Evicts LRU leaves from a tier until `enough` says stop or none is left.
  template <typename Enough>
  Result<EvictResult> EvictLocked(TierIndex tier, const Key128* ns, Enough enough);
  // Makes room on disk for `bytes` more, or ResourceExhausted.
  Status MakeDiskRoomLocked(uint64_t bytes);
  // Caches a visible chunk in DRAM if it fits, then enforces the budget.
  void CacheInDramLocked(Node* node, const ChunkBytes& bytes);
  // Drops a chunk that failed verification, with its descendants, unless
  // the key was re-put since (another generation). Returns DataLoss.
  Status DropCorruptLocked(Lock& lock, const Key128& ns, const Key128& key, uint64_t generation,
                           const Status& cause);
  StoreStats StatsLocked() const;
  void PublishLocked();
  NamespaceInfo NamespaceInfoLocked(const NamespaceState& state) const;

  const StoreOptions options_;
  std::unique_ptr<ChunkTier> dram_;
  std::unique_ptr<DurableTier> disk_;
  std::unique_ptr<StoreMetrics> metrics_;

  std::mutex mu_;
  std::condition_variable settled_cv_;  // a pending write finished
  PrefixIndex index_;
  uint64_t pending_bytes_ = 0;  // payloads being written to disk
  StoreStats counters_;         // the "since Open" counters only
  uint64_t evictions_[kTierCount] = {0, 0};
  std::unordered_map<uint64_t, std::vector<ChunkAddress>> leases_;
  uint64_t next_lease_id_ = 1;
};

}  // namespace seqkv::server::internal
