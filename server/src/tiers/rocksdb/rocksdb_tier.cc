// The disk tier: one RocksDB instance.
//
//   column family "meta":   namespaces and chunk records (small, compressed)
//   column family "chunks": chunk payloads, in blob files (BlobDB), with no
//                           compression (payloads are already compressed by
//                           their codec; the chunk header guards integrity)
//
// A chunk's record and payload go into one WriteBatch, so a crash leaves
// either both or neither: there is never a visible partial chunk.
#include <rocksdb/cache.h>
#include <rocksdb/db.h>
#include <rocksdb/options.h>
#include <rocksdb/table.h>
#include <rocksdb/write_batch.h>

#include <algorithm>
#include <vector>

#include "record_coding.h"
#include "seqkv/server/tier.h"

namespace seqkv::server {
namespace {

Status FromRocks(const rocksdb::Status& s, std::string_view what) {
  if (s.ok()) return Status::Ok();
  std::string msg = "rocksdb " + std::string(what) + ": " + s.ToString();
  if (s.IsNotFound()) return NotFound(std::move(msg));
  if (s.IsCorruption()) return DataLoss(std::move(msg));
  if (s.IsBusy() || s.IsTryAgain() || s.IsTimedOut()) return Unavailable(std::move(msg));
  if (s.IsInvalidArgument()) return InvalidArgument(std::move(msg));
  if (s.IsIOError() && s.IsNoSpace()) return ResourceExhausted(std::move(msg));
  return Internal(std::move(msg));
}

rocksdb::Slice AsSlice(std::span<const uint8_t> bytes) {
  return {reinterpret_cast<const char*>(bytes.data()), bytes.size()};
}

class RocksDbTier final : public DurableTier {
 public:
  RocksDbTier(const RocksDbTierOptions& options, std::unique_ptr<rocksdb::DB> db,
              std::vector<rocksdb::ColumnFamilyHandle*> handles)
      : options_(options), db_(std::move(db)), handles_(std::move(handles)) {
    sync_.sync = options.sync_writes;
    // A lost erase (power loss) only brings back a valid chunk; no fsync.
    nosync_.sync = false;
  }

  ~RocksDbTier() override {
    for (rocksdb::ColumnFamilyHandle* h : handles_) {
      (void)db_->DestroyColumnFamilyHandle(h);
    }
    (void)db_->Close();
  }

  TierKind kind() const override { return TierKind::kDisk; }

  Status Write(const ChunkRecord& record, const ChunkBytes& bytes) override {
    if (!bytes) return InvalidArgument("rocksdb tier: null payload");
    rocksdb::WriteBatch batch;
    const ChunkAddress address = record.address();
    SEQKV_RETURN_IF_ERROR(
        FromRocks(batch.Put(chunks_cf(), ChunkPayloadKey(address), AsSlice(*bytes)), "batch payload"));
    SEQKV_RETURN_IF_ERROR(FromRocks(
        batch.Put(meta_cf(), ChunkRecordKey(address), internal::EncodeChunkRecord(record)), "batch record"));
    return FromRocks(db_->Write(sync_, &batch), "write chunk");
  }

  Result<ChunkBytes> Read(const ChunkAddress& address) override {
    rocksdb::PinnableSlice value;
    SEQKV_RETURN_IF_ERROR(FromRocks(
        db_->Get(rocksdb::ReadOptions(), chunks_cf(), ChunkPayloadKey(address), &value), "read chunk"));
    const auto* data = reinterpret_cast<const uint8_t*>(value.data());
    return std::make_shared<const std::vector<uint8_t>>(data, data + value.size());
  }

  Status Erase(std::span<const ChunkAddress> addresses) override {
    if (addresses.empty()) return Status::Ok();
    rocksdb::WriteBatch batch;
    for (const ChunkAddress& address : addresses) {
      SEQKV_RETURN_IF_ERROR(
          FromRocks(batch.Delete(meta_cf(), ChunkRecordKey(address)), "batch erase record"));
      SEQKV_RETURN_IF_ERROR(
          FromRocks(batch.Delete(chunks_cf(), ChunkPayloadKey(address)), "batch erase payload"));
    }
    return FromRocks(db_->Write(nosync_, &batch), "erase chunks");
  }

  // On-disk footprint: SST files of both families plus blob files.
  uint64_t used_bytes() const override {
    uint64_t total = 0;
    for (rocksdb::ColumnFamilyHandle* h : {meta_cf(), chunks_cf()}) {
      uint64_t value = 0;
      if (db_->GetIntProperty(h, rocksdb::DB::Properties::kLiveSstFilesSize, &value)) total += value;
      if (db_->GetIntProperty(h, rocksdb::DB::Properties::kTotalBlobFileSize, &value)) total += value;
    }
    return total;
  }

  // RocksDB's estimate of payload keys.
  uint64_t chunks() const override {
    uint64_t value = 0;
    db_->GetIntProperty(chunks_cf(), rocksdb::DB::Properties::kEstimateNumKeys, &value);
    return value;
  }

  Status UpdateRecord(const ChunkRecord& record, bool durable) override {
    return FromRocks(db_->Put(durable ? sync_ : nosync_, meta_cf(), ChunkRecordKey(record.address()),
                              internal::EncodeChunkRecord(record)),
                     "update record");
  }

  Status PutNamespace(const Key128& id, const NamespaceFields& fields) override {
    return FromRocks(
        db_->Put(sync_, meta_cf(), NamespaceRecordKey(id), internal::EncodeNamespaceFields(fields)),
        "put namespace");
  }

  Status DeleteNamespace(const Key128& id) override {
    return FromRocks(db_->Delete(sync_, meta_cf(), NamespaceRecordKey(id)), "delete namespace");
  }

  Status Recover(const RecoveryVisitor& visitor) override {
    std::unique_ptr<rocksdb::Iterator> it(db_->NewIterator(rocksdb::ReadOptions(), meta_cf()));
    // Namespaces first, so the visitor knows every namespace before it
    // sees a chunk record.
    const std::string ns_prefix(1, internal::kNamespacePrefix);
    for (it->Seek(ns_prefix); it->Valid() && it->key().starts_with(ns_prefix); it->Next()) {
      rocksdb::Slice key = it->key();
      if (key.size() != 17) continue;
      Key128 id = internal::ReadKey(std::string_view(key.data() + 1, 16));
      Result<NamespaceFields> fields = internal::DecodeNamespaceFields(it->value().ToStringView());
      if (!fields.ok()) {
        if (visitor.on_corrupt) visitor.on_corrupt({id, Key128{}}, fields.status());
        continue;
      }
      if (visitor.on_namespace) visitor.on_namespace(id, *fields);
    }
    SEQKV_RETURN_IF_ERROR(FromRocks(it->status(), "scan namespaces"));
    const std::string chunk_prefix(1, internal::kChunkRecordPrefix);
    for (it->Seek(chunk_prefix); it->Valid() && it->key().starts_with(chunk_prefix); it->Next()) {
      Result<ChunkAddress> address = internal::ParseChunkRecordKey(it->key().ToStringView());
      if (!address.ok()) continue;
      Result<ChunkRecord> record = internal::DecodeChunkRecord(it->value().ToStringView());
      if (!record.ok()) {
        if (visitor.on_corrupt) visitor.on_corrupt(*address, record.status());
        continue;
      }
      record->ns = address->ns;
      record->key = address->key;
      if (visitor.on_chunk) visitor.on_chunk(std::move(record).value());
    }
    return FromRocks(it->status(), "scan chunk records");
  }

  Status Compact() override {
    rocksdb::CompactRangeOptions options;
    options.bottommost_level_compaction = rocksdb::BottommostLevelCompaction::kForce;
    options.blob_garbage_collection_policy = rocksdb::BlobGarbageCollectionPolicy::kForce;
    options.blob_garbage_collection_age_cutoff = 1.0;
    for (rocksdb::ColumnFamilyHandle* h : {meta_cf(), chunks_cf()}) {
      SEQKV_RETURN_IF_ERROR(FromRocks(db_->CompactRange(options, h, nullptr, nullptr), "compact"));
    }
    return Status::Ok();
  }

 private:
  rocksdb::ColumnFamilyHandle* meta_cf() const { return handles_[1]; }
  rocksdb::ColumnFamilyHandle* chunks_cf() const { return handles_[2]; }

  RocksDbTierOptions options_;
  std::unique_ptr<rocksdb::DB> db_;
  std::vector<rocksdb::ColumnFamilyHandle*> handles_;  // default, meta, chunks
  rocksdb::WriteOptions sync_;
  rocksdb::WriteOptions nosync_;
};

}  // namespace

Result<std::unique_ptr<DurableTier>> OpenRocksDbTier(const RocksDbTierOptions& options) {
  if (options.path.empty()) return InvalidArgument("rocksdb tier: empty path");
  rocksdb::DBOptions db_options;
  db_options.create_if_missing = options.create_if_missing;
  db_options.create_missing_column_families = options.create_if_missing;
  // Payloads pass through the WAL; bound it so it is flushed into blob files.
  db_options.max_total_wal_size = 4 * options.write_buffer_bytes;
  db_options.keep_log_file_num = 4;

  rocksdb::BlockBasedTableOptions table;
  table.block_cache = rocksdb::NewLRUCache(options.block_cache_bytes);

  rocksdb::ColumnFamilyOptions meta;
  meta.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  meta.write_buffer_size = std::min<uint64_t>(options.write_buffer_bytes, uint64_t{16} << 20);

  rocksdb::ColumnFamilyOptions chunks;
  chunks.table_factory.reset(rocksdb::NewBlockBasedTableFactory(table));
  chunks.write_buffer_size = options.write_buffer_bytes;
  chunks.compression = rocksdb::kNoCompression;
  chunks.enable_blob_files = true;
  chunks.min_blob_size = options.min_blob_bytes;
  chunks.blob_compression_type = rocksdb::kNoCompression;
  chunks.enable_blob_garbage_collection = true;

  std::vector<rocksdb::ColumnFamilyDescriptor> families = {
      {rocksdb::kDefaultColumnFamilyName, rocksdb::ColumnFamilyOptions()},
      {kMetaColumnFamily, meta},
      {kChunksColumnFamily, chunks},
  };
  std::vector<rocksdb::ColumnFamilyHandle*> handles;
  rocksdb::DB* raw = nullptr;
  rocksdb::Status s = rocksdb::DB::Open(db_options, options.path, families, &handles, &raw);
  if (!s.ok()) return FromRocks(s, "open " + options.path);
  return std::unique_ptr<DurableTier>(
      new RocksDbTier(options, std::unique_ptr<rocksdb::DB>(raw), std::move(handles)));
}

}  // namespace seqkv::server
