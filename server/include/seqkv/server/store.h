// The seqkv store: a single-node KV-cache store (docs/store.md).
//
// Chunks are encoded KV chunks (seqkv/codec/format.h) addressed by chain keys
// (seqkv/proto/keys.h) inside a registered namespace. Per namespace the store
// keeps a prefix tree of chunks: a chunk's parent is the chunk of the previous
// chunk_tokens tokens, so a chunk is only useful while its whole prefix is
// present. Chunks are written to a durable disk tier (RocksDB) and cached in a
// DRAM tier; both have byte budgets and evict least-recently-used leaves first.
//
// This is plain C++: the gRPC service (server/src/rpc/) only converts and
// forwards to this interface.
//
// Thread safety: every method of Store may be called concurrently from many
// threads. Returned values are owned by the caller.
//
// Errors (codes map 1:1 onto gRPC codes):
//   InvalidArgument    bad input: malformed chunk, wrong token count or dtype,
//                      chain-key mismatch, oversized chunk, bad fields.
//   NotFound           unknown namespace, chunk, or lease.
//   FailedPrecondition parent chunk absent; chunk pinned or held (Delete);
//                      unpin of an unpinned chunk.
//   ResourceExhausted  no room in the disk tier even after eviction (all
//                      remaining chunks pinned or held).
//   DataLoss           a stored chunk failed its checksum: it was dropped
//                      (with its descendants) and counted; treat as a miss.
//   Internal/Unavailable  RocksDB failed.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "seqkv/codec/chunk.h"
#include "seqkv/codec/status.h"
#include "seqkv/proto/keys.h"

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace seqkv::server {

// Where a chunk lives. A chunk in DRAM is also on disk (DRAM is a cache);
// a chunk's tier is the fastest one holding it.
enum class TierKind : uint8_t { kNone = 0, kDram = 1, kDisk = 2 };
std::string_view TierName(TierKind tier);  // "none", "dram", "disk"

// Immutable encoded chunk bytes, shared between the DRAM tier and readers.
using ChunkBytes = std::shared_ptr<const std::vector<uint8_t>>;

struct StoreOptions {
  // RocksDB directory (created if missing and create_if_missing).
  std::string data_dir = "./seqkv-data";
  bool create_if_missing = true;
  // Payload bytes each tier may hold; the store evicts LRU leaves above it.
  uint64_t dram_budget_bytes = uint64_t{1} << 30;   // 1 GiB
  uint64_t disk_budget_bytes = uint64_t{16} << 30;  // 16 GiB
  // Larger chunks are rejected with InvalidArgument.
  uint64_t max_chunk_bytes = uint64_t{256} << 20;  // 256 MiB
  // fsync the WAL on every Put and namespace registration (crash-safe
  // against power loss, not only against a killed process).
  bool sync_writes = true;
  // Keep a freshly put chunk in DRAM (write-through cache).
  bool cache_on_put = true;
  // Reject a chunk whose first_position != depth * chunk_tokens.
  bool check_first_position = true;
  // Re-verify section checksums on DRAM hits too (disk reads always are).
  bool verify_dram_reads = false;
  // RocksDB tuning.
  uint64_t rocksdb_write_buffer_bytes = uint64_t{64} << 20;
  uint64_t rocksdb_block_cache_bytes = uint64_t{32} << 20;
  // Payloads at least this large go to blob files (0: all of them).
  uint64_t rocksdb_min_blob_bytes = 0;
};

struct NamespaceInfo {
  Key128 id;
  NamespaceFields fields;
  uint64_t chunks = 0;
  uint64_t logical_bytes = 0;   // bytes clients put, duplicates included
  uint64_t physical_bytes = 0;  // bytes stored on disk, once per chunk
};

// Presence of one looked-up chunk.
struct ChunkPresence {
  bool present = false;
  uint64_t size_bytes = 0;  // encoded size
  TierKind tier = TierKind::kNone;
  std::string codec_spec;  // as written in the chunk header
};

struct LookupOptions {
  // Count the present prefix as recently used (LRU).
  bool touch = true;
};

struct LookupResult {
  // Number of leading keys present with an unbroken parent chain: the
  // usable prefix. Chunks after a gap may still be present but unusable.
  uint32_t prefix_chunks = 0;
  std::vector<ChunkPresence> chunks;  // one per key, in order
  uint64_t requested_tokens = 0;      // keys.size() * chunk_tokens
  uint64_t hit_tokens = 0;            // prefix_chunks * chunk_tokens
};

struct PutOptions {
  // Pin the chunk after storing it (as Pin would).
  bool pin = false;
};

struct PutResult {
  bool deduplicated = false;  // key was already present; nothing written
  uint64_t size_bytes = 0;
  TierKind tier = TierKind::kNone;  // where the chunk is now
};

struct GetOptions {
  // Copy a disk hit into DRAM.
  bool promote = true;
};

struct DeleteOptions {
  // Delete even if the chunk or a descendant is pinned or held.
  bool force = false;
};

struct DeleteResult {
  uint64_t chunks = 0;
  uint64_t bytes = 0;
};

// A session's hold on a prefix: held chunks are never evicted.
struct Lease {
  uint64_t id = 0;
  uint32_t chunks = 0;  // leading chunks held
};

struct EvictOptions {
  std::optional<Key128> ns;         // only this namespace; all if unset
  TierKind tier = TierKind::kDisk;  // kDram drops cached copies only;
                                    // kDisk removes chunks entirely
  uint64_t bytes = 0;               // free at least this much (if possible)
};

struct EvictResult {
  uint64_t chunks = 0;
  uint64_t bytes = 0;
};

struct TierStats {
  uint64_t chunks = 0;
  uint64_t logical_bytes = 0;   // size * puts of the chunks in the tier
  uint64_t physical_bytes = 0;  // size of the chunks in the tier
  uint64_t budget_bytes = 0;
  uint64_t evictions = 0;  // chunks evicted from the tier since Open
};

struct StoreStats {
  TierStats dram;
  TierStats disk;
  uint64_t namespaces = 0;
  uint64_t raw_kv_bytes = 0;  // uncompressed K+V bytes of stored chunks
  // RocksDB's files (SST + blob) on disk: payloads plus overhead and space
  // not yet reclaimed by compaction.
  uint64_t disk_footprint_bytes = 0;
  // Since Open:
  uint64_t lookups = 0;
  uint64_t lookup_tokens = 0;
  uint64_t hit_tokens = 0;
  uint64_t puts = 0;
  uint64_t dedup_puts = 0;
  uint64_t gets = 0;
  uint64_t get_hits = 0;
  uint64_t promotions = 0;
  uint64_t checksum_failures = 0;
  // disk.logical_bytes / disk.physical_bytes (1 when empty).
  double dedup_ratio = 1.0;
  // raw_kv_bytes / disk.physical_bytes (1 when empty).
  double compression_ratio = 1.0;
};

struct ChunkInfo {
  Key128 ns;
  Key128 key;
  std::optional<Key128> parent;  // unset for the first chunk of a sequence
  std::vector<Key128> children;
  uint32_t depth = 0;  // 0 for the first chunk
  uint64_t size_bytes = 0;
  uint64_t raw_kv_bytes = 0;
  TierKind tier = TierKind::kNone;
  bool in_dram = false;
  bool on_disk = false;
  uint32_t pins = 0;
  uint32_t holders = 0;
  uint64_t puts = 0;  // logical copies put (1 + duplicates)
  uint64_t last_access_unix_ms = 0;
  // From the chunk header:
  KvShape shape;
  DType dtype = DType::kBF16;
  uint16_t codec_id = 0;
  std::string codec_spec;
  uint32_t flags = 0;
  uint64_t first_position = 0;
  uint64_t header_bytes = 0;
  uint32_t sections = 0;
};

class Store {
 public:
  // Opens (or creates) the store in options.data_dir and rebuilds the index
  // from disk. `metrics` may be null; if not, it must outlive the store and
  // the store's metric families are registered on it.
  static Result<std::unique_ptr<Store>> Open(const StoreOptions& options, prometheus::Registry* metrics);

  Store() = default;
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;
  // Closes RocksDB. No call may be in flight.
  virtual ~Store() = default;

  // Registers a namespace (idempotent; persisted) and returns its id
  // (NamespaceId(fields)). InvalidArgument on invalid fields.
  virtual Result<Key128> RegisterNamespace(const NamespaceFields& fields) = 0;
  virtual Result<NamespaceInfo> GetNamespace(const Key128& ns) = 0;
  virtual Result<std::vector<NamespaceInfo>> ListNamespaces() = 0;
  // Deletes a namespace and all its chunks.
  virtual Result<DeleteResult> DeleteNamespace(const Key128& ns, const DeleteOptions& options) = 0;

  // Presence of each chain key, and the usable leading prefix.
  virtual Result<LookupResult> Lookup(const Key128& ns, std::span<const Key128> keys,
                                      const LookupOptions& options = {}) = 0;

  // Stores one encoded chunk. `parent` is the key of the previous chunk (must
  // be present; if another put is writing it, this one waits) or unset for
  // the first chunk. Before the chunk becomes visible the store checks: the
  // container header and every section checksum; size <= max_chunk_bytes;
  // token count == the namespace's chunk_tokens; dtype == its kv_dtype;
  // first_position (see options); and key == NextChunkKey(parent or ns,
  // tokens). A key already present is not stored again (dedup; counted as
  // logical bytes only). Index entry and payload are written in one atomic
  // batch.
  virtual Result<PutResult> Put(const Key128& ns, const std::optional<Key128>& parent, const Key128& key,
                                std::span<const uint8_t> chunk, const PutOptions& options = {}) = 0;

  // The encoded chunk. NotFound if absent; DataLoss if it failed its checksum
  // (it is then dropped with its descendants, and counted).
  virtual Result<ChunkBytes> Get(const Key128& ns, const Key128& key, const GetOptions& options = {}) = 0;

  // Deletes a chunk and all its descendants (useless without their prefix).
  virtual Result<DeleteResult> Delete(const Key128& ns, const Key128& key,
                                      const DeleteOptions& options = {}) = 0;

  // Pin refcount: a pinned chunk (and so its ancestors) is never evicted.
  // Pins are persisted. Unpin of an unpinned chunk: FailedPrecondition.
  virtual Status Pin(const Key128& ns, const Key128& key) = 0;
  virtual Status Unpin(const Key128& ns, const Key128& key) = 0;

  // Holds the usable leading prefix of `keys` for a session (holder
  // refcounts; not persisted). Release the lease when done.
  virtual Result<Lease> Acquire(const Key128& ns, std::span<const Key128> keys) = 0;
  virtual Status Release(uint64_t lease_id) = 0;

  virtual Result<StoreStats> Stats() = 0;

  // Evicts LRU leaves (unpinned, unheld) until options.bytes are freed or
  // nothing more is evictable.
  virtual Result<EvictResult> Evict(const EvictOptions& options) = 0;

  // Compacts RocksDB (reclaims space of deleted chunks and blob garbage).
  virtual Status Compact() = 0;

  virtual Result<ChunkInfo> Inspect(const Key128& ns, const Key128& key) = 0;
};

}  // namespace seqkv::server
