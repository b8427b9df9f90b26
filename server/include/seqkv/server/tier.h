// Storage tiers of the store (docs/store.md), one implementation per folder
// under server/src/tiers/.
//
// A tier only stores bytes under a chunk address; which chunks live where,
// budgets and eviction are the store's logic (the prefix trie), so tiers stay
// small and swappable. The durable tier additionally persists the index
// (namespaces and one record per chunk) and writes a chunk's record and
// payload atomically, which is what makes a killed process never leave a
// visible partial chunk.
//
// Thread safety: all methods may be called concurrently.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "seqkv/codec/chunk.h"
#include "seqkv/codec/status.h"
#include "seqkv/proto/keys.h"
#include "seqkv/server/store.h"

namespace seqkv::server {

struct ChunkAddress {
  Key128 ns;
  Key128 key;
  bool operator==(const ChunkAddress&) const = default;
};

struct ChunkAddressHash {
  size_t operator()(const ChunkAddress& a) const {
    return Key128Hash()(a.key) ^ (Key128Hash()(a.ns) * 0x9E3779B97F4A7C15ull);
  }
};

// The persisted index entry of one chunk: its place in the trie, counters
// and a summary of its header (so Lookup and Inspect read no payload).
struct ChunkRecord {
  Key128 ns;
  Key128 key;
  std::optional<Key128> parent;
  uint32_t depth = 0;
  uint64_t size_bytes = 0;
  uint64_t raw_kv_bytes = 0;
  uint32_t pins = 0;
  uint64_t puts = 1;
  KvShape shape;
  DType dtype = DType::kBF16;
  uint16_t codec_id = 0;
  std::string codec_spec;
  uint32_t flags = 0;
  uint64_t first_position = 0;
  uint64_t header_bytes = 0;
  uint32_t sections = 0;

  ChunkAddress address() const { return {ns, key}; }
};

// Byte storage for chunk payloads.
class ChunkTier {
 public:
  virtual ~ChunkTier() = default;

  virtual TierKind kind() const = 0;

  // Stores `bytes` (non-null) under record.address(), replacing any value.
  // A durable tier writes the record in the same atomic batch.
  virtual Status Write(const ChunkRecord& record, const ChunkBytes& bytes) = 0;
  // NotFound if absent. Bytes are returned as stored, unverified.
  virtual Result<ChunkBytes> Read(const ChunkAddress& address) = 0;
  // Removes chunks (and, in a durable tier, their records) in one batch.
  // Absent addresses are ignored.
  virtual Status Erase(std::span<const ChunkAddress> addresses) = 0;

  virtual uint64_t used_bytes() const = 0;
  virtual uint64_t chunks() const = 0;
};

// Called once per persisted namespace and chunk record by Recover.
struct RecoveryVisitor {
  std::function<void(const Key128& id, const NamespaceFields& fields)> on_namespace;
  std::function<void(ChunkRecord record)> on_chunk;
  // A record that could not be parsed (it is skipped; the store drops it).
  std::function<void(const ChunkAddress& address, const Status& status)> on_corrupt;
};

// A tier that survives restarts and holds the index.
class DurableTier : public ChunkTier {
 public:
  // Rewrites a chunk's record only (pins, puts). `durable`: synced like a
  // chunk write (pins); otherwise unsynced (counters, where a loss is
  // harmless).
  virtual Status UpdateRecord(const ChunkRecord& record, bool durable) = 0;
  virtual Status PutNamespace(const Key128& id, const NamespaceFields& fields) = 0;
  virtual Status DeleteNamespace(const Key128& id) = 0;
  // Visits every namespace, then every chunk record.
  virtual Status Recover(const RecoveryVisitor& visitor) = 0;
  // Full compaction; reclaims deleted payloads and blob garbage.
  virtual Status Compact() = 0;
};

// The DRAM tier: payloads shared in memory (no copies on read). It does not
// enforce a budget itself; the store evicts from it.
std::unique_ptr<ChunkTier> NewDramTier();

struct RocksDbTierOptions {
  std::string path;
  bool create_if_missing = true;
  bool sync_writes = true;
  uint64_t write_buffer_bytes = uint64_t{64} << 20;
  uint64_t block_cache_bytes = uint64_t{32} << 20;
  uint64_t min_blob_bytes = 0;
};

// The disk tier: one RocksDB instance with column families "meta" (namespaces
// and chunk records) and "chunks" (payloads in blob files, uncompressed).
// Erase is not synced (a lost erase only brings back a valid chunk).
Result<std::unique_ptr<DurableTier>> OpenRocksDbTier(const RocksDbTierOptions& options);

// RocksDB key layout, exposed for tests and tools (docs/store.md):
//   meta   "N" + ns(16)           -> namespace fields (JSON)
//   meta   "C" + ns(16) + key(16) -> ChunkRecord (binary, versioned)
//   chunks ns(16) + key(16)       -> encoded chunk bytes
inline constexpr char kMetaColumnFamily[] = "meta";
inline constexpr char kChunksColumnFamily[] = "chunks";
std::string ChunkPayloadKey(const ChunkAddress& address);
std::string ChunkRecordKey(const ChunkAddress& address);
std::string NamespaceRecordKey(const Key128& id);

}  // namespace seqkv::server
