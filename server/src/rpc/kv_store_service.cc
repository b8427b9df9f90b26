#include "rpc/kv_store_service.h"

#include <algorithm>
#include <optional>
#include <vector>

#include "rpc/store_convert.h"

namespace seqkv::rpc {
namespace {

using wire::ToGrpc;

grpc::Status Invalid(std::string message) {
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, std::move(message));
}

// The namespace id of a request, which must name a registered namespace:
// an unknown namespace fails the call as a whole (NOT_FOUND), not per item.
Result<Key128> KnownNamespace(server::Store* store, const std::string& bytes) {
  SEQKV_ASSIGN_OR_RETURN(Key128 ns, wire::KeyFromBytes(bytes, "namespace_id"));
  SEQKV_RETURN_IF_ERROR(store->GetNamespace(ns).status());
  return ns;
}

// The chunk being received by a Put stream.
struct PendingChunk {
  bool open = false;
  Key128 key;
  std::optional<Key128> parent;
  bool pin = false;
  uint64_t total = 0;
  std::vector<uint8_t> bytes;
};

}  // namespace

KvStoreService::KvStoreService(server::Store* store, RpcMetrics* metrics, CallGate* gate,
                               const ServiceOptions& options)
    : store_(store), metrics_(metrics), gate_(gate), options_(options) {}

grpc::Status KvStoreService::Lookup(grpc::ServerContext*, const v1::LookupRequest* request,
                                    v1::LookupResponse* response) {
  CallScope scope(metrics_, gate_, "Lookup");
  if (!scope.admitted()) return scope.Refuse();
  Result<Key128> ns = wire::KeyFromBytes(request->namespace_id(), "namespace_id");
  if (!ns.ok()) return scope.Finish(ToGrpc(ns.status()));
  Result<std::vector<Key128>> keys = wire::KeysFromBytes(request->chunk_keys(), "chunk_keys");
  if (!keys.ok()) return scope.Finish(ToGrpc(keys.status()));
  server::LookupOptions options;
  options.touch = !request->skip_touch();
  Result<server::LookupResult> result = store_->Lookup(*ns, *keys, options);
  if (!result.ok()) return scope.Finish(ToGrpc(result.status()));
  response->set_prefix_chunks(result->prefix_chunks);
  response->set_requested_tokens(result->requested_tokens);
  response->set_hit_tokens(result->hit_tokens);
  for (const server::ChunkPresence& p : result->chunks) {
    v1::ChunkPresence* out = response->add_chunks();
    out->set_present(p.present);
    out->set_size_bytes(p.size_bytes);
    out->set_tier(TierToProto(p.tier));
    out->set_codec_spec(p.codec_spec);
  }
  scope.Note("keys=" + std::to_string(keys->size()) + " prefix=" + std::to_string(result->prefix_chunks));
  return scope.Finish(grpc::Status::OK);
}

grpc::Status KvStoreService::Put(grpc::ServerContext* context, grpc::ServerReader<v1::PutRequest>* reader,
                                 v1::PutResponse* response) {
  CallScope scope(metrics_, gate_, "Put");
  if (!scope.admitted()) return scope.Refuse();
  grpc::Status status = DoPut(reader, response, &scope);
  // A client that went away mid-stream shows up as a short stream; say what it was.
  if (context->IsCancelled()) status = grpc::Status(grpc::StatusCode::CANCELLED, "put cancelled by the client");
  scope.Note("chunks=" + std::to_string(response->results_size()) + " stored=" + std::to_string(response->stored()) +
             " dedup=" + std::to_string(response->deduplicated()));
  return scope.Finish(status);
}

grpc::Status KvStoreService::DoPut(grpc::ServerReader<v1::PutRequest>* reader, v1::PutResponse* response,
                                   CallScope* scope) {
  v1::PutRequest frame;
  std::optional<Key128> ns;
  PendingChunk chunk;
  uint64_t frames = 0;
  auto where = [&] { return "chunk " + std::to_string(response->results_size()) + ": "; };
  while (reader->Read(&frame)) {
    ++frames;
    if (!frame.namespace_id().empty()) {
      Result<Key128> id = wire::KeyFromBytes(frame.namespace_id(), "namespace_id");
      if (!id.ok()) return ToGrpc(id.status());
      if (ns && *ns != *id) return Invalid("namespace_id changed within one Put stream");
      ns = *id;
    }
    if (frames == 1) {
      if (!ns) return Invalid("the first Put frame must carry namespace_id");
      if (frame.has_namespace_()) {
        // Check before registering, so an inconsistent request registers nothing.
        const NamespaceFields fields = wire::NamespaceFromProto(frame.namespace_());
        if (NamespaceId(fields) != *ns) {
          return Invalid("namespace_id " + ns->ToHex() + " is not the id of the given namespace fields (" +
                         NamespaceId(fields).ToHex() + ")");
        }
        Result<Key128> registered = store_->RegisterNamespace(fields);
        if (!registered.ok()) return ToGrpc(registered.status());
      }
    } else if (frame.has_namespace_()) {
      return Invalid("namespace fields are only allowed in the first Put frame");
    }
    if (frame.has_begin()) {
      const v1::PutChunkBegin& begin = frame.begin();
      if (chunk.open) {
        return Invalid(where() + "new chunk begun after " + std::to_string(chunk.bytes.size()) + " of " +
                       std::to_string(chunk.total) + " bytes");
      }
      Result<Key128> key = wire::KeyFromBytes(begin.key(), "begin.key");
      if (!key.ok()) return ToGrpc(key.status());
      Result<std::optional<Key128>> parent = wire::OptionalKeyFromBytes(begin.parent_key(), "begin.parent_key");
      if (!parent.ok()) return ToGrpc(parent.status());
      if (begin.total_bytes() > options_.max_chunk_bytes) {
        return Invalid(where() + "total_bytes " + std::to_string(begin.total_bytes()) + " exceeds the limit of " +
                       std::to_string(options_.max_chunk_bytes));
      }
      chunk.open = true;
      chunk.key = *key;
      chunk.parent = *parent;
      chunk.pin = begin.pin();
      chunk.total = begin.total_bytes();
      chunk.bytes.clear();
      // Grow with the data actually received, not with what was announced.
      chunk.bytes.reserve(std::min<uint64_t>(chunk.total, uint64_t{64} << 20));
    } else if (!chunk.open) {
      if (frame.data().empty()) continue;  // a namespace-only frame
      return Invalid(where() + "data frame without a preceding begin");
    }
    const std::string& data = frame.data();
    if (data.size() > chunk.total - chunk.bytes.size()) {
      return Invalid(where() + "more data than the announced total_bytes " + std::to_string(chunk.total));
    }
    chunk.bytes.insert(chunk.bytes.end(), data.begin(), data.end());
    scope->AddReceived(data.size());
    if (chunk.bytes.size() < chunk.total) continue;

    // Complete: the store verifies it and makes it visible (or says why not).
    server::PutOptions options;
    options.pin = chunk.pin;
    Result<server::PutResult> put = store_->Put(*ns, chunk.parent, chunk.key, chunk.bytes, options);
    v1::PutResult* result = response->add_results();
    wire::ToItemStatus(put.status(), result->mutable_status());
    if (put.ok()) {
      result->set_deduplicated(put->deduplicated);
      result->set_size_bytes(put->size_bytes);
      result->set_tier(TierToProto(put->tier));
      if (put->deduplicated) {
        response->set_deduplicated(response->deduplicated() + 1);
      } else {
        response->set_stored(response->stored() + 1);
      }
    } else {
      response->set_failed(response->failed() + 1);
    }
    chunk.open = false;
    chunk.bytes.clear();
  }
  if (chunk.open) {
    // Client went away (or closed early) mid-chunk: the partial chunk is dropped, never stored.
    return Invalid(where() + "stream ended after " + std::to_string(chunk.bytes.size()) + " of " +
                   std::to_string(chunk.total) + " bytes");
  }
  if (frames == 0) return Invalid("empty Put stream: the first frame must carry namespace_id");
  return grpc::Status::OK;
}

grpc::Status KvStoreService::Get(grpc::ServerContext*, const v1::GetRequest* request,
                                 grpc::ServerWriter<v1::GetResponse>* writer) {
  CallScope scope(metrics_, gate_, "Get");
  if (!scope.admitted()) return scope.Refuse();
  scope.Note("keys=" + std::to_string(request->chunk_keys_size()));
  return scope.Finish(DoGet(*request, writer, &scope));
}

grpc::Status KvStoreService::DoGet(const v1::GetRequest& request, grpc::ServerWriter<v1::GetResponse>* writer,
                                   CallScope* scope) {
  Result<Key128> ns = KnownNamespace(store_, request.namespace_id());
  if (!ns.ok()) return ToGrpc(ns.status());
  Result<std::vector<Key128>> keys = wire::KeysFromBytes(request.chunk_keys(), "chunk_keys");
  if (!keys.ok()) return ToGrpc(keys.status());
  uint32_t frame_bytes = request.max_frame_bytes() == 0 ? options_.default_frame_bytes : request.max_frame_bytes();
  frame_bytes = std::clamp<uint32_t>(frame_bytes, 4096, options_.max_frame_bytes);
  server::GetOptions options;
  options.promote = !request.skip_promote();
  v1::GetResponse frame;
  const grpc::Status broken(grpc::StatusCode::CANCELLED, "client went away during Get");
  for (size_t i = 0; i < keys->size(); ++i) {
    Result<server::ChunkBytes> bytes = store_->Get(*ns, (*keys)[i], options);
    frame.Clear();
    frame.set_index(static_cast<uint32_t>(i));
    wire::ToItemStatus(bytes.status(), frame.mutable_status());
    if (!bytes.ok()) {
      if (!writer->Write(frame)) return broken;
      continue;
    }
    const std::vector<uint8_t>& data = **bytes;
    frame.set_total_bytes(data.size());
    size_t offset = 0;
    do {
      size_t n = std::min<size_t>(frame_bytes, data.size() - offset);
      frame.set_offset(offset);
      frame.set_data(reinterpret_cast<const char*>(data.data()) + offset, n);
      if (!writer->Write(frame)) return broken;
      scope->AddSent(n);
      offset += n;
      frame.Clear();
      frame.set_index(static_cast<uint32_t>(i));
    } while (offset < data.size());
  }
  return grpc::Status::OK;
}

grpc::Status KvStoreService::Delete(grpc::ServerContext*, const v1::DeleteRequest* request,
                                    v1::DeleteResponse* response) {
  CallScope scope(metrics_, gate_, "Delete");
  if (!scope.admitted()) return scope.Refuse();
  Result<Key128> ns = KnownNamespace(store_, request->namespace_id());
  if (!ns.ok()) return scope.Finish(ToGrpc(ns.status()));
  Result<std::vector<Key128>> keys = wire::KeysFromBytes(request->chunk_keys(), "chunk_keys");
  if (!keys.ok()) return scope.Finish(ToGrpc(keys.status()));
  server::DeleteOptions options;
  options.force = request->force();
  for (const Key128& key : *keys) {
    Result<server::DeleteResult> deleted = store_->Delete(*ns, key, options);
    v1::DeleteResult* out = response->add_results();
    wire::ToItemStatus(deleted.status(), out->mutable_status());
    if (deleted.ok()) {
      out->set_chunks(deleted->chunks);
      out->set_bytes(deleted->bytes);
    }
  }
  return scope.Finish(grpc::Status::OK);
}

grpc::Status KvStoreService::Pin(grpc::ServerContext*, const v1::PinRequest* request, v1::PinResponse* response) {
  CallScope scope(metrics_, gate_, "Pin");
  if (!scope.admitted()) return scope.Refuse();
  Result<Key128> ns = KnownNamespace(store_, request->namespace_id());
  if (!ns.ok()) return scope.Finish(ToGrpc(ns.status()));
  Result<std::vector<Key128>> keys = wire::KeysFromBytes(request->chunk_keys(), "chunk_keys");
  if (!keys.ok()) return scope.Finish(ToGrpc(keys.status()));
  for (const Key128& key : *keys) wire::ToItemStatus(store_->Pin(*ns, key), response->add_results());
  return scope.Finish(grpc::Status::OK);
}

grpc::Status KvStoreService::Unpin(grpc::ServerContext*, const v1::UnpinRequest* request,
                                   v1::UnpinResponse* response) {
  CallScope scope(metrics_, gate_, "Unpin");
  if (!scope.admitted()) return scope.Refuse();
  Result<Key128> ns = KnownNamespace(store_, request->namespace_id());
  if (!ns.ok()) return scope.Finish(ToGrpc(ns.status()));
  Result<std::vector<Key128>> keys = wire::KeysFromBytes(request->chunk_keys(), "chunk_keys");
  if (!keys.ok()) return scope.Finish(ToGrpc(keys.status()));
  for (const Key128& key : *keys) wire::ToItemStatus(store_->Unpin(*ns, key), response->add_results());
  return scope.Finish(grpc::Status::OK);
}

grpc::Status KvStoreService::Acquire(grpc::ServerContext*, const v1::AcquireRequest* request,
                                     v1::AcquireResponse* response) {
  CallScope scope(metrics_, gate_, "Acquire");
  if (!scope.admitted()) return scope.Refuse();
  Result<Key128> ns = wire::KeyFromBytes(request->namespace_id(), "namespace_id");
  if (!ns.ok()) return scope.Finish(ToGrpc(ns.status()));
  Result<std::vector<Key128>> keys = wire::KeysFromBytes(request->chunk_keys(), "chunk_keys");
  if (!keys.ok()) return scope.Finish(ToGrpc(keys.status()));
  Result<server::Lease> lease = store_->Acquire(*ns, *keys);
  if (!lease.ok()) return scope.Finish(ToGrpc(lease.status()));
  response->set_lease_id(lease->id);
  response->set_chunks(lease->chunks);
  return scope.Finish(grpc::Status::OK);
}

grpc::Status KvStoreService::Release(grpc::ServerContext*, const v1::ReleaseRequest* request,
                                     v1::ReleaseResponse*) {
  CallScope scope(metrics_, gate_, "Release");
  if (!scope.admitted()) return scope.Refuse();
  return scope.Finish(ToGrpc(store_->Release(request->lease_id())));
}

grpc::Status KvStoreService::Stats(grpc::ServerContext*, const v1::StatsRequest*, v1::StatsResponse* response) {
  CallScope scope(metrics_, gate_, "Stats");
  if (!scope.admitted()) return scope.Refuse();
  Result<server::StoreStats> stats = store_->Stats();
  if (!stats.ok()) return scope.Finish(ToGrpc(stats.status()));
  StatsToProto(*stats, response);
  return scope.Finish(grpc::Status::OK);
}

}  // namespace seqkv::rpc
