// Store::Open, recovery and namespaces.
#include <spdlog/spdlog.h>

#include <algorithm>
#include <filesystem>
#include <system_error>

#include "store_impl.h"

namespace seqkv::server {

std::string_view TierName(TierKind tier) {
  switch (tier) {
    case TierKind::kNone:
      return "none";
    case TierKind::kDram:
      return "dram";
    case TierKind::kDisk:
      return "disk";
  }
  return "unknown";
}

Result<std::unique_ptr<Store>> Store::Open(const StoreOptions& options, prometheus::Registry* metrics) {
  if (options.data_dir.empty()) return InvalidArgument("store: data_dir is empty");
  if (options.max_chunk_bytes == 0) return InvalidArgument("store: max_chunk_bytes is 0");
  if (options.disk_budget_bytes == 0) return InvalidArgument("store: disk_budget_bytes is 0");
  if (options.create_if_missing) {
    std::error_code ec;
    std::filesystem::create_directories(options.data_dir, ec);
    if (ec) return Unavailable("store: cannot create " + options.data_dir + ": " + ec.message());
  }
  SEQKV_ASSIGN_OR_RETURN(auto store_metrics, internal::StoreMetrics::Create(metrics));
  RocksDbTierOptions disk_options;
  disk_options.path = options.data_dir;
  disk_options.create_if_missing = options.create_if_missing;
  disk_options.sync_writes = options.sync_writes;
  disk_options.write_buffer_bytes = options.rocksdb_write_buffer_bytes;
  disk_options.block_cache_bytes = options.rocksdb_block_cache_bytes;
  disk_options.min_blob_bytes = options.rocksdb_min_blob_bytes;
  SEQKV_ASSIGN_OR_RETURN(auto disk, OpenRocksDbTier(disk_options));
  auto store = std::make_unique<internal::StoreImpl>(options, NewDramTier(), std::move(disk),
                                                     std::move(store_metrics));
  SEQKV_RETURN_IF_ERROR(store->Recover());
  return std::unique_ptr<Store>(std::move(store));
}

namespace internal {

StoreImpl::StoreImpl(const StoreOptions& options, std::unique_ptr<ChunkTier> dram,
                     std::unique_ptr<DurableTier> disk, std::unique_ptr<StoreMetrics> metrics)
    : options_(options), dram_(std::move(dram)), disk_(std::move(disk)), metrics_(std::move(metrics)) {}

StoreImpl::~StoreImpl() = default;

Status StoreImpl::Recover() {
  std::vector<ChunkRecord> records;
  std::vector<ChunkAddress> corrupt;
  uint64_t namespaces = 0;
  RecoveryVisitor visitor;
  visitor.on_namespace = [&](const Key128& id, const NamespaceFields& fields) {
    Result<DType> dtype = ParseDType(fields.kv_dtype);
    if (!dtype.ok() || NamespaceId(fields) != id) {
      spdlog::warn("event=namespace_record_skipped namespace={} reason=\"fields do not match its id\"", id.ToHex());
      return;
    }
    index_.AddNamespace(id, fields, *dtype);
    ++namespaces;
  };
  visitor.on_chunk = [&](ChunkRecord record) { records.push_back(std::move(record)); };
  visitor.on_corrupt = [&](const ChunkAddress& address, const Status& status) {
    spdlog::warn("event=record_dropped namespace={} key={} error=\"{}\"", address.ns.ToHex(), address.key.ToHex(),
                 status.ToString());
    if (address.key != Key128{}) corrupt.push_back(address);
  };
  SEQKV_RETURN_IF_ERROR(disk_->Recover(visitor).WithContext("store recovery"));

  // Parents before children, so each parent is linked before its child.
  // Insertion order becomes the LRU order after a restart (shallow chunks
  // look older), which is harmless: parents go only after their children.
  std::stable_sort(records.begin(), records.end(),
                   [](const ChunkRecord& a, const ChunkRecord& b) { return a.depth < b.depth; });
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<ChunkAddress> orphans = corrupt;
  for (ChunkRecord& record : records) {
    Node* parent = nullptr;
    bool ok = index_.FindNamespace(record.ns) != nullptr && index_.Find(record.ns, record.key) == nullptr;
    if (ok && record.parent) {
      parent = index_.Find(record.ns, *record.parent);
      ok = parent != nullptr && parent->record.depth + 1 == record.depth;
    }
    if (!ok) {
      // Its namespace or prefix is gone (or the record is inconsistent): a
      // chunk is useless without its prefix.
      orphans.push_back(record.address());
      continue;
    }
    index_.Insert(std::move(record), parent, /*pending=*/false);
  }
  if (!orphans.empty()) {
    spdlog::warn("event=orphans_erased count={}", orphans.size());
    SEQKV_RETURN_IF_ERROR(disk_->Erase(orphans).WithContext("store recovery: erase orphans"));
  }
  // The budget may have shrunk since the last run.
  if (index_.totals(kDiskIndex).physical_bytes > options_.disk_budget_bytes) {
    Status s = MakeDiskRoomLocked(0);
    if (!s.ok()) spdlog::warn("event=over_disk_budget_after_recovery error=\"{}\"", s.ToString());
  }
  spdlog::info("event=store_opened data_dir={} namespaces={} chunks={} bytes={}", options_.data_dir, namespaces,
               index_.totals(kDiskIndex).chunks, index_.totals(kDiskIndex).physical_bytes);
  PublishLocked();
  return Status::Ok();
}

Result<NamespaceState*> StoreImpl::NamespaceLocked(const Key128& ns) {
  NamespaceState* state = index_.FindNamespace(ns);
  if (state == nullptr) return NotFound("unknown namespace " + ns.ToHex());
  return state;
}

NamespaceInfo StoreImpl::NamespaceInfoLocked(const NamespaceState& state) const {
  NamespaceInfo info;
  info.id = state.id;
  info.fields = state.fields;
  info.chunks = state.chunks;
  info.logical_bytes = state.logical_bytes;
  info.physical_bytes = state.physical_bytes;
  return info;
}

Result<Key128> StoreImpl::RegisterNamespace(const NamespaceFields& fields) {
  SEQKV_RETURN_IF_ERROR(ValidateNamespace(fields));
  SEQKV_ASSIGN_OR_RETURN(DType dtype, ParseDType(fields.kv_dtype));
  const Key128 id = NamespaceId(fields);
  std::lock_guard<std::mutex> lock(mu_);
  if (index_.FindNamespace(id) != nullptr) return id;
  SEQKV_RETURN_IF_ERROR(disk_->PutNamespace(id, fields));
  index_.AddNamespace(id, fields, dtype);
  PublishLocked();
  return id;
}

Result<NamespaceInfo> StoreImpl::GetNamespace(const Key128& ns) {
  std::lock_guard<std::mutex> lock(mu_);
  SEQKV_ASSIGN_OR_RETURN(NamespaceState * state, NamespaceLocked(ns));
  return NamespaceInfoLocked(*state);
}

Result<std::vector<NamespaceInfo>> StoreImpl::ListNamespaces() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<NamespaceInfo> out;
  for (const auto& [id, state] : index_.namespaces()) out.push_back(NamespaceInfoLocked(*state));
  std::sort(out.begin(), out.end(),
            [](const NamespaceInfo& a, const NamespaceInfo& b) { return a.id < b.id; });
  return out;
}

Result<DeleteResult> StoreImpl::DeleteNamespace(const Key128& ns, const DeleteOptions& options) {
  Lock lock(mu_);
  {
    SEQKV_ASSIGN_OR_RETURN(NamespaceState * state, NamespaceLocked(ns));
    for (const auto& [key, node] : state->nodes) {
      if (!options.force && (node->record.pins > 0 || node->holders > 0)) {
        return FailedPrecondition("namespace " + ns.ToHex() + " has pinned or held chunks (" + key.ToHex() +
                                  "); use force");
      }
    }
  }
  DeleteResult result;
  for (;;) {
    SEQKV_ASSIGN_OR_RETURN(NamespaceState * state, NamespaceLocked(ns));
    // Delete one first-chunk subtree at a time (each waits for its pending
    // writes), until the namespace is empty.
    Node* root = nullptr;
    bool pending_only = true;
    for (const auto& [key, node] : state->nodes) {
      if (node->parent == nullptr) {
        root = node.get();
        if (!node->pending) {
          pending_only = false;
          break;
        }
      }
    }
    if (root == nullptr) break;
    if (pending_only) {
      settled_cv_.wait(lock);
      continue;
    }
    std::vector<Node*> subtree;
    if (!SettledSubtreeLocked(lock, ns, root->record.key, &subtree)) continue;
    SEQKV_RETURN_IF_ERROR(EraseLocked(subtree, &result));
  }
  SEQKV_RETURN_IF_ERROR(disk_->DeleteNamespace(ns));
  index_.RemoveNamespace(ns);
  PublishLocked();
  return result;
}

}  // namespace internal
}  // namespace seqkv::server
