// seqkv.v1.Admin over a server::Store: status, namespaces, eviction,
// compaction and chunk inspection. Converts and forwards only.
//
// Thread safety: handlers run concurrently; the only mutable state (the
// listen address, known once the server is bound) is guarded.
#pragma once

#include <chrono>
#include <mutex>
#include <string>

#include <grpcpp/grpcpp.h>

#include "rpc/rpc_metrics.h"
#include "seqkv/server/store.h"
#include "seqkv/v1/seqkv.grpc.pb.h"

namespace seqkv::rpc {

struct AdminInfo {
  std::string version = "0.1.0";
  std::string data_dir;
};

class AdminService final : public v1::Admin::Service {
 public:
  // store, metrics and gate (both may be null) must outlive the service.
  AdminService(server::Store* store, RpcMetrics* metrics, CallGate* gate, AdminInfo info);

  // The address the server actually bound (reported by Status).
  void SetListenAddress(std::string address);

  grpc::Status Status(grpc::ServerContext* context, const v1::StatusRequest* request,
                      v1::StatusResponse* response) override;
  grpc::Status ListNamespaces(grpc::ServerContext* context, const v1::ListNamespacesRequest* request,
                              v1::ListNamespacesResponse* response) override;
  grpc::Status RegisterNamespace(grpc::ServerContext* context, const v1::RegisterNamespaceRequest* request,
                                 v1::RegisterNamespaceResponse* response) override;
  grpc::Status DeleteNamespace(grpc::ServerContext* context, const v1::DeleteNamespaceRequest* request,
                               v1::DeleteNamespaceResponse* response) override;
  grpc::Status Evict(grpc::ServerContext* context, const v1::EvictRequest* request,
                     v1::EvictResponse* response) override;
  grpc::Status Compact(grpc::ServerContext* context, const v1::CompactRequest* request,
                       v1::CompactResponse* response) override;
  grpc::Status Inspect(grpc::ServerContext* context, const v1::InspectRequest* request,
                       v1::InspectResponse* response) override;

 private:
  server::Store* store_;
  RpcMetrics* metrics_;
  CallGate* gate_;
  const AdminInfo info_;
  const std::chrono::steady_clock::time_point started_;
  std::mutex mu_;
  std::string listen_address_;
};

}  // namespace seqkv::rpc
