// The gRPC server of seqkv: binds an address, serves seqkv.v1.KvStore and
// seqkv.v1.Admin over a Store. Used by seqkv-server's main() and by tests
// that want an in-process server.
//
// Thread safety: Start, address and port are safe from any thread; Shutdown
// may be called once from any thread (e.g. a signal-watching thread) and
// unblocks Wait.
#pragma once

#include <chrono>
#include <memory>
#include <string>

#include "rpc/admin_service.h"
#include "rpc/kv_store_service.h"
#include "rpc/rpc_metrics.h"
#include "seqkv/codec/status.h"
#include "seqkv/proto/wire.h"
#include "seqkv/server/store.h"

namespace grpc {
class Server;
}  // namespace grpc

namespace prometheus {
class Registry;
}  // namespace prometheus

namespace seqkv::rpc {

struct RpcServerOptions {
  // host:port; port 0 picks a free port (see address()).
  std::string listen = "127.0.0.1:50051";
  // Cap on one message in either direction; must match the clients'.
  int max_message_bytes = wire::kDefaultMaxMessageBytes;
  // Most threads serving calls at once (the sync server blocks one per call).
  int max_threads = 64;
  ServiceOptions service;
  AdminInfo admin;
};

class RpcServer {
 public:
  // Binds options.listen and starts serving. Unavailable if the address
  // cannot be bound, InvalidArgument for a malformed address. store and
  // metrics (may be null) must outlive the server.
  static Result<std::unique_ptr<RpcServer>> Start(const RpcServerOptions& options, server::Store* store,
                                                  prometheus::Registry* metrics);
  ~RpcServer();  // Shutdown(0) if still running.
  RpcServer(const RpcServer&) = delete;
  RpcServer& operator=(const RpcServer&) = delete;

  // The bound address, "host:port" with the actual port.
  const std::string& address() const { return address_; }
  int port() const { return port_; }

  // Graceful stop: new calls are refused with UNAVAILABLE, calls in flight
  // get up to `grace` to finish, then the rest are cancelled and the
  // listening port closed. Idempotent.
  void Shutdown(std::chrono::milliseconds grace);
  // Blocks until the server has shut down.
  void Wait();

 private:
  RpcServer() = default;

  std::unique_ptr<RpcMetrics> metrics_;
  CallGate gate_;
  std::unique_ptr<KvStoreService> kv_service_;
  std::unique_ptr<AdminService> admin_service_;
  std::unique_ptr<grpc::Server> server_;
  std::string address_;
  int port_ = 0;
  std::mutex mu_;
  bool shut_down_ = false;
};

}  // namespace seqkv::rpc
