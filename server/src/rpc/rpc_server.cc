#include "rpc/rpc_server.h"

#include <grpcpp/grpcpp.h>
#include <grpcpp/resource_quota.h>
#include <spdlog/spdlog.h>

namespace seqkv::rpc {

RpcServer::~RpcServer() { Shutdown(std::chrono::milliseconds(0)); }

Result<std::unique_ptr<RpcServer>> RpcServer::Start(const RpcServerOptions& options, server::Store* store,
                                                    prometheus::Registry* metrics) {
  size_t colon = options.listen.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == options.listen.size()) {
    return InvalidArgument("listen address must be HOST:PORT, got '" + options.listen + "'");
  }
  if (options.max_message_bytes < (1 << 20)) return InvalidArgument("max_message_bytes must be at least 1 MiB");
  std::unique_ptr<RpcServer> server(new RpcServer());
  SEQKV_ASSIGN_OR_RETURN(server->metrics_, RpcMetrics::Create(metrics));
  ServiceOptions service = options.service;
  service.max_frame_bytes = std::min<uint32_t>(service.max_frame_bytes, options.max_message_bytes - (64u << 10));
  service.default_frame_bytes = std::min(service.default_frame_bytes, service.max_frame_bytes);
  server->kv_service_ = std::make_unique<KvStoreService>(store, server->metrics_.get(), &server->gate_, service);
  server->admin_service_ = std::make_unique<AdminService>(store, server->metrics_.get(), &server->gate_, options.admin);

  grpc::ServerBuilder builder;
  int selected_port = 0;
  builder.AddListeningPort(options.listen, grpc::InsecureServerCredentials(), &selected_port);
  // gRPC sets SO_REUSEPORT by default, which lets a second server silently
  // share a busy port; a store must own its address.
  builder.AddChannelArgument(GRPC_ARG_ALLOW_REUSEPORT, 0);
  builder.SetMaxReceiveMessageSize(options.max_message_bytes);
  builder.SetMaxSendMessageSize(options.max_message_bytes);
  grpc::ResourceQuota quota("seqkv-server");
  quota.SetMaxThreads(options.max_threads);
  builder.SetResourceQuota(quota);
  builder.RegisterService(server->kv_service_.get());
  builder.RegisterService(server->admin_service_.get());
  server->server_ = builder.BuildAndStart();
  if (server->server_ == nullptr || selected_port == 0) {
    return Unavailable("cannot listen on " + options.listen + " (address in use or not local?)");
  }
  server->port_ = selected_port;
  server->address_ = options.listen.substr(0, colon) + ":" + std::to_string(selected_port);
  server->admin_service_->SetListenAddress(server->address_);
  return server;
}

void RpcServer::Shutdown(std::chrono::milliseconds grace) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (shut_down_ || server_ == nullptr) return;
    shut_down_ = true;
  }
  // Drain first, then shut down at once: gRPC's own Shutdown(deadline) also
  // waits out the deadline for idle client connections.
  gate_.StartDraining();
  if (!gate_.WaitIdle(std::chrono::steady_clock::now() + grace)) {
    spdlog::warn("event=shutdown_grace_expired grace_ms={}", grace.count());
  }
  server_->Shutdown(std::chrono::system_clock::now());
}

void RpcServer::Wait() {
  if (server_ != nullptr) server_->Wait();
}

}  // namespace seqkv::rpc
