// The data path: Lookup, Put, Get.
#include <spdlog/spdlog.h>

#include "chunk_verify.h"
#include "store_impl.h"

namespace seqkv::server::internal {
namespace {

TierKind TierOf(const Node& node) {
  if (node.in_dram) return TierKind::kDram;
  return node.on_disk ? TierKind::kDisk : TierKind::kNone;
}

}  // namespace

std::vector<Node*> StoreImpl::UsablePrefixLocked(const Key128& ns, std::span<const Key128> keys) {
  std::vector<Node*> prefix;
  Node* previous = nullptr;
  for (const Key128& key : keys) {
    Node* node = index_.FindVisible(ns, key);
    if (node == nullptr || node->parent != previous) break;
    prefix.push_back(node);
    previous = node;
  }
  return prefix;
}

Result<LookupResult> StoreImpl::Lookup(const Key128& ns, std::span<const Key128> keys,
                                       const LookupOptions& options) {
  std::lock_guard<std::mutex> lock(mu_);
  SEQKV_ASSIGN_OR_RETURN(NamespaceState * state, NamespaceLocked(ns));
  LookupResult result;
  result.chunks.resize(keys.size());
  for (size_t i = 0; i < keys.size(); ++i) {
    Node* node = index_.FindVisible(ns, keys[i]);
    if (node == nullptr) continue;
    ChunkPresence& p = result.chunks[i];
    p.present = true;
    p.size_bytes = node->record.size_bytes;
    p.tier = TierOf(*node);
    p.codec_spec = node->record.codec_spec;
  }
  std::vector<Node*> prefix = UsablePrefixLocked(ns, keys);
  if (options.touch) {
    for (Node* node : prefix) index_.Touch(node);
  }
  const uint64_t chunk_tokens = state->fields.chunk_tokens;
  result.prefix_chunks = static_cast<uint32_t>(prefix.size());
  result.requested_tokens = keys.size() * chunk_tokens;
  result.hit_tokens = prefix.size() * chunk_tokens;
  counters_.lookups += 1;
  counters_.lookup_tokens += result.requested_tokens;
  counters_.hit_tokens += result.hit_tokens;
  metrics_->AddLookup(result.requested_tokens, result.hit_tokens);
  return result;
}

Result<PutResult> StoreImpl::Put(const Key128& ns, const std::optional<Key128>& parent, const Key128& key,
                                 std::span<const uint8_t> chunk, const PutOptions& options) {
  // Checks that need no lock: size, container, checksums, chain key.
  if (chunk.empty()) return InvalidArgument("put: empty chunk");
  if (chunk.size() > options_.max_chunk_bytes) {
    return InvalidArgument("put: chunk of " + std::to_string(chunk.size()) +
                           " bytes exceeds max_chunk_bytes " + std::to_string(options_.max_chunk_bytes));
  }
  NamespaceFields fields;
  DType dtype;
  {
    std::lock_guard<std::mutex> lock(mu_);
    SEQKV_ASSIGN_OR_RETURN(NamespaceState * state, NamespaceLocked(ns));
    fields = state->fields;
    dtype = state->dtype;
  }
  Result<ChunkHeader> header = VerifyChunk(chunk);
  if (!header.ok()) return InvalidArgument("put: chunk rejected: " + header.status().message());
  if (header->shape.tokens != fields.chunk_tokens || header->tokens.size() != fields.chunk_tokens) {
    return InvalidArgument("put: chunk has " + std::to_string(header->shape.tokens) +
                           " tokens, namespace chunk_tokens is " + std::to_string(fields.chunk_tokens));
  }
  if (header->dtype != dtype) {
    return InvalidArgument("put: chunk dtype " + std::string(DTypeName(header->dtype)) +
                           " differs from namespace kv_dtype " + fields.kv_dtype);
  }
  const Key128 expected = NextChunkKey(parent ? *parent : ns, header->tokens);
  if (expected != key) {
    return InvalidArgument("put: chain key mismatch: key " + key.ToHex() + " but NextChunkKey(" +
                           (parent ? "parent" : "namespace") + ", tokens) = " + expected.ToHex());
  }

  ChunkRecord record;
  record.ns = ns;
  record.key = key;
  record.parent = parent;
  record.size_bytes = chunk.size();
  record.raw_kv_bytes = RawKvBytes(*header);
  record.pins = options.pin ? 1 : 0;
  record.puts = 1;
  record.shape = header->shape;
  record.dtype = header->dtype;
  record.codec_id = static_cast<uint16_t>(header->codec_id);
  record.codec_spec = header->codec_spec;
  record.flags = header->flags;
  record.first_position = header->first_position;
  record.header_bytes = header->header_bytes;
  record.sections = static_cast<uint32_t>(header->sections.size());

  Lock lock(mu_);
  Node* node = nullptr;
  for (;;) {
    SEQKV_RETURN_IF_ERROR(NamespaceLocked(ns).status());
    Node* parent_node = nullptr;
    if (parent) {
      parent_node = index_.Find(ns, *parent);
      if (parent_node != nullptr && parent_node->pending) {
        settled_cv_.wait(lock);  // the parent is being written by another put
        continue;
      }
      if (parent_node == nullptr) {
        return FailedPrecondition("put: parent chunk " + parent->ToHex() +
                                  " is not present; put the prefix first");
      }
      record.depth = parent_node->record.depth + 1;
    } else {
      record.depth = 0;
    }
    if (options_.check_first_position &&
        record.first_position != uint64_t{record.depth} * fields.chunk_tokens) {
      return InvalidArgument("put: chunk first_position " + std::to_string(record.first_position) +
                             " but its depth " + std::to_string(record.depth) + " needs " +
                             std::to_string(uint64_t{record.depth} * fields.chunk_tokens));
    }
    Node* existing = index_.Find(ns, key);
    if (existing != nullptr && existing->pending) {
      settled_cv_.wait(lock);  // another put of the same key is writing
      continue;
    }
    if (existing != nullptr) {
      // Dedup: one more logical copy, nothing written but the record.
      index_.AddPut(existing);
      if (options.pin) index_.AddPin(existing, +1);
      index_.Touch(existing);
      Status s = disk_->UpdateRecord(existing->record, /*durable=*/options.pin);
      if (!s.ok()) spdlog::warn("event=record_update_failed key={} error=\"{}\"", key.ToHex(), s.ToString());
      counters_.puts += 1;
      counters_.dedup_puts += 1;
      PublishLocked();
      return PutResult{true, existing->record.size_bytes, TierOf(*existing)};
    }
    // Insert first: the pending child keeps its parent from being evicted
    // to make room for it.
    node = index_.Insert(record, parent_node, /*pending=*/true);
    pending_bytes_ += chunk.size();
    if (Status room = MakeDiskRoomLocked(pending_bytes_); !room.ok()) {
      pending_bytes_ -= chunk.size();
      index_.Remove(node);
      settled_cv_.notify_all();
      return room.WithContext("put");
    }
    break;
  }
  lock.unlock();

  // The payload and its record, in one atomic batch, outside the lock.
  auto bytes = std::make_shared<const std::vector<uint8_t>>(chunk.begin(), chunk.end());
  Status written = disk_->Write(record, bytes);

  lock.lock();
  pending_bytes_ -= chunk.size();
  if (!written.ok()) {
    index_.Remove(node);
    settled_cv_.notify_all();
    return written.WithContext("put");
  }
  index_.MarkWritten(node);
  if (options_.cache_on_put) CacheInDramLocked(node, bytes);
  counters_.puts += 1;
  settled_cv_.notify_all();
  PublishLocked();
  return PutResult{false, node->record.size_bytes, TierOf(*node)};
}

Result<ChunkBytes> StoreImpl::Get(const Key128& ns, const Key128& key, const GetOptions& options) {
  Lock lock(mu_);
  SEQKV_RETURN_IF_ERROR(NamespaceLocked(ns).status());
  counters_.gets += 1;
  Node* node = index_.FindVisible(ns, key);
  if (node == nullptr) return NotFound("chunk " + key.ToHex() + " not present");
  index_.Touch(node);
  const uint64_t generation = node->generation;
  const bool from_dram = node->in_dram;
  ChunkBytes bytes;
  if (from_dram) {
    Result<ChunkBytes> cached = dram_->Read({ns, key});
    if (cached.ok()) bytes = std::move(cached).value();
  }
  lock.unlock();

  Status status;
  bool vanished = false;  // the disk had no payload
  if (!bytes) {
    Result<ChunkBytes> read = disk_->Read({ns, key});
    if (read.ok()) {
      bytes = std::move(read).value();
    } else if (read.status().code() == StatusCode::kNotFound ||
               read.status().code() == StatusCode::kDataLoss) {
      vanished = read.status().code() == StatusCode::kNotFound;
      status = DataLoss(read.status().message());
    } else {
      return read.status().WithContext("get");
    }
  }
  if (status.ok() && (!from_dram || options_.verify_dram_reads)) {
    status = VerifyChunk(*bytes).status();
  }

  lock.lock();
  if (!status.ok()) {
    Node* current = index_.FindVisible(ns, key);
    if (vanished && (current == nullptr || current->generation != generation)) {
      return NotFound("chunk " + key.ToHex() + " was evicted or deleted during the read");
    }
    return DropCorruptLocked(lock, ns, key, generation, status);
  }
  counters_.get_hits += 1;
  // Promote only the chunk we read: it may have been evicted and put again
  // (possibly with other bytes) while the lock was released.
  node = index_.FindVisible(ns, key);
  if (node != nullptr && node->generation == generation && options.promote && !node->in_dram) {
    CacheInDramLocked(node, bytes);
    if (node->in_dram) {
      counters_.promotions += 1;
      metrics_->AddPromotions(1);
    }
  }
  PublishLocked();
  return bytes;
}

Status StoreImpl::DropCorruptLocked(Lock& lock, const Key128& ns, const Key128& key, uint64_t generation,
                                    const Status& cause) {
  counters_.checksum_failures += 1;
  metrics_->AddChecksumFailures(1);
  spdlog::error("event=chunk_corrupt_dropped namespace={} key={} error=\"{}\"", ns.ToHex(),
                key.ToHex(), cause.ToString());
  std::vector<Node*> subtree;
  if (SettledSubtreeLocked(lock, ns, key, &subtree) && subtree.back()->generation == generation) {
    DeleteResult dropped;
    Status s = EraseLocked(subtree, &dropped);
    if (!s.ok()) spdlog::error("event=corrupt_erase_failed error=\"{}\"", s.ToString());
  }
  PublishLocked();
  return DataLoss("chunk " + key.ToHex() +
                  " failed verification and was dropped (a miss): " + cause.message());
}

}  // namespace seqkv::server::internal
