#include "prefix_index.h"

#include <algorithm>
#include <chrono>

namespace seqkv::server::internal {
namespace {

uint64_t NowUnixMs() {
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                   std::chrono::system_clock::now().time_since_epoch())
                                   .count());
}

}  // namespace

NamespaceState* PrefixIndex::FindNamespace(const Key128& id) {
  auto it = namespaces_.find(id);
  return it == namespaces_.end() ? nullptr : it->second.get();
}

NamespaceState* PrefixIndex::AddNamespace(const Key128& id, const NamespaceFields& fields, DType dtype) {
  auto& slot = namespaces_[id];
  if (!slot) {
    slot = std::make_unique<NamespaceState>();
    slot->id = id;
    slot->fields = fields;
    slot->dtype = dtype;
  }
  return slot.get();
}

void PrefixIndex::RemoveNamespace(const Key128& id) { namespaces_.erase(id); }

Node* PrefixIndex::Find(const Key128& ns, const Key128& key) {
  NamespaceState* state = FindNamespace(ns);
  if (state == nullptr) return nullptr;
  auto it = state->nodes.find(key);
  return it == state->nodes.end() ? nullptr : it->second.get();
}

Node* PrefixIndex::FindVisible(const Key128& ns, const Key128& key) {
  Node* node = Find(ns, key);
  return node != nullptr && node->visible() ? node : nullptr;
}

NamespaceState* PrefixIndex::NamespaceOf(const Node* node) { return FindNamespace(node->record.ns); }

Node* PrefixIndex::Insert(ChunkRecord record, Node* parent, bool pending) {
  NamespaceState* state = FindNamespace(record.ns);
  auto owned = std::make_unique<Node>();
  Node* node = owned.get();
  node->record = std::move(record);
  node->generation = ++generations_;
  node->parent = parent;
  node->pending = pending;
  state->nodes.emplace(node->record.key, std::move(owned));
  if (parent != nullptr) parent->children.push_back(node);
  if (!pending) {
    node->on_disk = true;
    AddToTotals(node, kDiskIndex, +1);
  }
  Touch(node);
  if (parent != nullptr) Reindex(parent);
  return node;
}

void PrefixIndex::MarkWritten(Node* node) {
  if (!node->pending) return;
  node->pending = false;
  node->on_disk = true;
  AddToTotals(node, kDiskIndex, +1);
  Touch(node);
}

void PrefixIndex::Remove(Node* node) {
  SetInDram(node, false);
  if (node->on_disk) {
    AddToTotals(node, kDiskIndex, -1);
    node->on_disk = false;
  }
  node->pending = false;
  for (int t = 0; t < kTierCount; ++t) {
    if (node->in_evict_set[t]) evictable_[t].erase({node->evict_tick[t], node});
    node->in_evict_set[t] = false;
  }
  Node* parent = node->parent;
  if (parent != nullptr) {
    auto& siblings = parent->children;
    siblings.erase(std::remove(siblings.begin(), siblings.end(), node), siblings.end());
    Reindex(parent);
  }
  NamespaceState* state = NamespaceOf(node);
  if (state != nullptr) state->nodes.erase(node->record.key);  // destroys node
}

void PrefixIndex::CollectSubtree(Node* node, std::vector<Node*>* out) const {
  // Iterative post-order: children are appended before their parent.
  std::vector<std::pair<Node*, size_t>> stack = {{node, 0}};
  while (!stack.empty()) {
    auto& [current, next_child] = stack.back();
    if (next_child < current->children.size()) {
      Node* child = current->children[next_child++];
      stack.push_back({child, 0});
    } else {
      out->push_back(current);
      stack.pop_back();
    }
  }
}

void PrefixIndex::Touch(Node* node) {
  node->last_access_tick = ++tick_;
  node->last_access_ms = NowUnixMs();
  Reindex(node);
}

void PrefixIndex::SetInDram(Node* node, bool in_dram) {
  if (node->in_dram == in_dram) return;
  node->in_dram = in_dram;
  AddToTotals(node, kDramIndex, in_dram ? +1 : -1);
  Reindex(node);
  if (node->parent != nullptr) {
    node->parent->dram_children += in_dram ? 1 : -1;
    Reindex(node->parent);
  }
}

void PrefixIndex::AddPut(Node* node) {
  ++node->record.puts;
  const uint64_t size = node->record.size_bytes;
  if (node->in_dram) totals_[kDramIndex].logical_bytes += size;
  if (node->on_disk) {
    totals_[kDiskIndex].logical_bytes += size;
    if (NamespaceState* state = NamespaceOf(node)) state->logical_bytes += size;
  }
}

void PrefixIndex::AddPin(Node* node, int delta) {
  node->record.pins += delta;
  Reindex(node);
}

void PrefixIndex::AddHolder(Node* node, int delta) {
  node->holders += delta;
  Reindex(node);
}

Node* PrefixIndex::OldestEvictable(TierIndex tier, const Key128* ns) const {
  for (const auto& [tick, node] : evictable_[tier]) {
    if (ns == nullptr || node->record.ns == *ns) return node;
  }
  return nullptr;
}

bool PrefixIndex::Evictable(const Node* node, TierIndex tier) const {
  if (node->pending || node->record.pins > 0 || node->holders > 0) return false;
  if (tier == kDramIndex) return node->in_dram && node->dram_children == 0;
  return node->on_disk && node->children.empty();
}

void PrefixIndex::Reindex(Node* node) {
  for (int t = 0; t < kTierCount; ++t) {
    const TierIndex tier = static_cast<TierIndex>(t);
    if (node->in_evict_set[t]) evictable_[t].erase({node->evict_tick[t], node});
    node->in_evict_set[t] = Evictable(node, tier);
    if (node->in_evict_set[t]) {
      node->evict_tick[t] = node->last_access_tick;
      evictable_[t].insert({node->evict_tick[t], node});
    }
  }
}

void PrefixIndex::AddToTotals(const Node* node, TierIndex tier, int sign) {
  const uint64_t size = node->record.size_bytes;
  const uint64_t logical = size * node->record.puts;
  TierTotals& totals = totals_[tier];
  if (sign > 0) {
    totals.chunks += 1;
    totals.physical_bytes += size;
    totals.logical_bytes += logical;
  } else {
    totals.chunks -= 1;
    totals.physical_bytes -= size;
    totals.logical_bytes -= logical;
  }
  if (tier != kDiskIndex) return;
  if (sign > 0) {
    raw_kv_bytes_ += node->record.raw_kv_bytes;
  } else {
    raw_kv_bytes_ -= node->record.raw_kv_bytes;
  }
  if (NamespaceState* state = NamespaceOf(node)) {
    if (sign > 0) {
      state->chunks += 1;
      state->physical_bytes += size;
      state->logical_bytes += logical;
    } else {
      state->chunks -= 1;
      state->physical_bytes -= size;
      state->logical_bytes -= logical;
    }
  }
}

}  // namespace seqkv::server::internal
