#include "rpc/admin_service.h"

#include "rpc/store_convert.h"
#include "seqkv/proto/wire.h"

namespace seqkv::rpc {

using wire::ToGrpc;

AdminService::AdminService(server::Store* store, RpcMetrics* metrics, CallGate* gate, AdminInfo info)
    : store_(store),
      metrics_(metrics),
      gate_(gate),
      info_(std::move(info)),
      started_(std::chrono::steady_clock::now()) {}

void AdminService::SetListenAddress(std::string address) {
  std::lock_guard<std::mutex> lock(mu_);
  listen_address_ = std::move(address);
}

grpc::Status AdminService::Status(grpc::ServerContext*, const v1::StatusRequest*, v1::StatusResponse* response) {
  CallScope scope(metrics_, gate_, "Status");
  if (!scope.admitted()) return scope.Refuse();
  Result<server::StoreStats> stats = store_->Stats();
  if (!stats.ok()) return scope.Finish(ToGrpc(stats.status()));
  response->set_version(info_.version);
  {
    std::lock_guard<std::mutex> lock(mu_);
    response->set_listen_address(listen_address_);
  }
  response->set_data_dir(info_.data_dir);
  response->set_uptime_seconds(static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::seconds>(std::chrono::steady_clock::now() - started_).count()));
  StatsToProto(*stats, response->mutable_stats());
  return scope.Finish(grpc::Status::OK);
}

grpc::Status AdminService::ListNamespaces(grpc::ServerContext*, const v1::ListNamespacesRequest*,
                                          v1::ListNamespacesResponse* response) {
  CallScope scope(metrics_, gate_, "ListNamespaces");
  if (!scope.admitted()) return scope.Refuse();
  Result<std::vector<server::NamespaceInfo>> list = store_->ListNamespaces();
  if (!list.ok()) return scope.Finish(ToGrpc(list.status()));
  for (const server::NamespaceInfo& info : *list) NamespaceInfoToProto(info, response->add_namespaces());
  return scope.Finish(grpc::Status::OK);
}

grpc::Status AdminService::RegisterNamespace(grpc::ServerContext*, const v1::RegisterNamespaceRequest* request,
                                             v1::RegisterNamespaceResponse* response) {
  CallScope scope(metrics_, gate_, "RegisterNamespace");
  if (!scope.admitted()) return scope.Refuse();
  if (!request->has_fields()) {
    return scope.Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "fields: required"));
  }
  Result<Key128> id = store_->RegisterNamespace(wire::NamespaceFromProto(request->fields()));
  if (!id.ok()) return scope.Finish(ToGrpc(id.status()));
  response->set_namespace_id(wire::KeyToBytes(*id));
  return scope.Finish(grpc::Status::OK);
}

grpc::Status AdminService::DeleteNamespace(grpc::ServerContext*, const v1::DeleteNamespaceRequest* request,
                                           v1::DeleteNamespaceResponse* response) {
  CallScope scope(metrics_, gate_, "DeleteNamespace");
  if (!scope.admitted()) return scope.Refuse();
  Result<Key128> ns = wire::KeyFromBytes(request->namespace_id(), "namespace_id");
  if (!ns.ok()) return scope.Finish(ToGrpc(ns.status()));
  server::DeleteOptions options;
  options.force = request->force();
  Result<server::DeleteResult> deleted = store_->DeleteNamespace(*ns, options);
  if (!deleted.ok()) return scope.Finish(ToGrpc(deleted.status()));
  response->set_chunks(deleted->chunks);
  response->set_bytes(deleted->bytes);
  return scope.Finish(grpc::Status::OK);
}

grpc::Status AdminService::Evict(grpc::ServerContext*, const v1::EvictRequest* request,
                                 v1::EvictResponse* response) {
  CallScope scope(metrics_, gate_, "Evict");
  if (!scope.admitted()) return scope.Refuse();
  server::EvictOptions options;
  Result<std::optional<Key128>> ns = wire::OptionalKeyFromBytes(request->namespace_id(), "namespace_id");
  if (!ns.ok()) return scope.Finish(ToGrpc(ns.status()));
  options.ns = *ns;
  options.tier = TierFromProto(request->tier());
  options.bytes = request->bytes();
  Result<server::EvictResult> evicted = store_->Evict(options);
  if (!evicted.ok()) return scope.Finish(ToGrpc(evicted.status()));
  response->set_chunks(evicted->chunks);
  response->set_bytes(evicted->bytes);
  scope.Note("chunks=" + std::to_string(evicted->chunks) + " bytes=" + std::to_string(evicted->bytes));
  return scope.Finish(grpc::Status::OK);
}

grpc::Status AdminService::Compact(grpc::ServerContext*, const v1::CompactRequest*, v1::CompactResponse*) {
  CallScope scope(metrics_, gate_, "Compact");
  if (!scope.admitted()) return scope.Refuse();
  return scope.Finish(ToGrpc(store_->Compact()));
}

grpc::Status AdminService::Inspect(grpc::ServerContext*, const v1::InspectRequest* request,
                                   v1::InspectResponse* response) {
  CallScope scope(metrics_, gate_, "Inspect");
  if (!scope.admitted()) return scope.Refuse();
  Result<Key128> ns = wire::KeyFromBytes(request->namespace_id(), "namespace_id");
  if (!ns.ok()) return scope.Finish(ToGrpc(ns.status()));
  Result<Key128> key = wire::KeyFromBytes(request->chunk_key(), "chunk_key");
  if (!key.ok()) return scope.Finish(ToGrpc(key.status()));
  Result<server::ChunkInfo> info = store_->Inspect(*ns, *key);
  if (!info.ok()) return scope.Finish(ToGrpc(info.status()));
  ChunkInfoToProto(*info, response);
  return scope.Finish(grpc::Status::OK);
}

}  // namespace seqkv::rpc
