// The store's in-memory index: per namespace, a prefix tree of chunks.
//
// Chain keys are hashes, so the tree is linked explicitly: every node knows
// its parent and children, and a hash map finds a node by key. A chunk is one
// node however many sessions share it; `puts` counts how many times clients
// put it (logical copies).
//
// Eviction: per tier, an ordered set of the nodes that may be evicted from it
// now, oldest access first. A node is evictable from a tier when it is in
// that tier, is not pinned, held or being written, and has no child in that
// tier (leaves before parents). Every state change calls Reindex so that the
// sets stay exact; evicting a leaf makes its parent a candidate.
//
// Not thread-safe: the store guards it with its mutex.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <unordered_map>
#include <utility>
#include <vector>

#include "seqkv/proto/keys.h"
#include "seqkv/server/store.h"
#include "seqkv/server/tier.h"

namespace seqkv::server::internal {

enum TierIndex : int { kDramIndex = 0, kDiskIndex = 1, kTierCount = 2 };

struct Node {
  ChunkRecord record;       // ns, key, parent, sizes, pins, puts, header summary
  uint64_t generation = 0;  // unique per inserted node (a re-put key gets a new one)
  Node* parent = nullptr;
  std::vector<Node*> children;  // includes pending children
  uint32_t holders = 0;         // leases holding this chunk
  bool pending = false;         // payload being written: not visible yet
  bool in_dram = false;
  bool on_disk = false;        // visible once true
  uint32_t dram_children = 0;  // children with in_dram
  uint64_t last_access_tick = 0;
  uint64_t last_access_ms = 0;
  // Membership in the eviction sets, keyed by the tick at insertion.
  bool in_evict_set[kTierCount] = {false, false};
  uint64_t evict_tick[kTierCount] = {0, 0};

  bool visible() const { return on_disk && !pending; }
};

struct NamespaceState {
  Key128 id;
  NamespaceFields fields;
  DType dtype = DType::kBF16;
  std::unordered_map<Key128, std::unique_ptr<Node>, Key128Hash> nodes;
  uint64_t chunks = 0;          // visible chunks
  uint64_t logical_bytes = 0;   // of visible chunks
  uint64_t physical_bytes = 0;  // of visible chunks
};

struct TierTotals {
  uint64_t chunks = 0;
  uint64_t logical_bytes = 0;
  uint64_t physical_bytes = 0;
};

class PrefixIndex {
 public:
  PrefixIndex() = default;
  PrefixIndex(const PrefixIndex&) = delete;
  PrefixIndex& operator=(const PrefixIndex&) = delete;

  NamespaceState* FindNamespace(const Key128& id);
  NamespaceState* AddNamespace(const Key128& id, const NamespaceFields& fields, DType dtype);
  // Precondition: the namespace has no nodes.
  void RemoveNamespace(const Key128& id);
  const std::unordered_map<Key128, std::unique_ptr<NamespaceState>, Key128Hash>& namespaces() const {
    return namespaces_;
  }

  // Any node (pending or visible), or null.
  Node* Find(const Key128& ns, const Key128& key);
  // A visible node, or null.
  Node* FindVisible(const Key128& ns, const Key128& key);

  // Adds a node under `parent` (null for a first chunk). Precondition: the
  // key is absent and the namespace exists. pending: invisible until
  // MarkWritten; otherwise the node is on disk at once (recovery).
  Node* Insert(ChunkRecord record, Node* parent, bool pending);
  // A pending node's payload is durable: it becomes visible.
  void MarkWritten(Node* node);
  // Removes a node that has no children; drops it from every tier's totals.
  void Remove(Node* node);
  // The node and all its descendants, children before parents.
  void CollectSubtree(Node* node, std::vector<Node*>* out) const;

  void Touch(Node* node);
  void SetInDram(Node* node, bool in_dram);
  void AddPut(Node* node);  // a duplicate put: one more logical copy
  void AddPin(Node* node, int delta);
  void AddHolder(Node* node, int delta);

  // The least recently used node evictable from `tier` (kDram or kDisk),
  // optionally only from namespace `ns`; null if none.
  Node* OldestEvictable(TierIndex tier, const Key128* ns) const;

  const TierTotals& totals(TierIndex tier) const { return totals_[tier]; }
  uint64_t raw_kv_bytes() const { return raw_kv_bytes_; }

 private:
  void Reindex(Node* node);
  bool Evictable(const Node* node, TierIndex tier) const;
  void AddToTotals(const Node* node, TierIndex tier, int sign);
  NamespaceState* NamespaceOf(const Node* node);

  std::unordered_map<Key128, std::unique_ptr<NamespaceState>, Key128Hash> namespaces_;
  std::set<std::pair<uint64_t, Node*>> evictable_[kTierCount];
  TierTotals totals_[kTierCount];
  uint64_t raw_kv_bytes_ = 0;
  uint64_t tick_ = 0;
  uint64_t generations_ = 0;
};

}  // namespace seqkv::server::internal
