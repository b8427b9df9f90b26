// Private to client/: the gRPC stubs and the retry loop shared by the
// client's translation units.
#pragma once

#include <chrono>
#include <memory>
#include <string_view>
#include <thread>

#include <grpcpp/grpcpp.h>

#include "seqkv/client/client.h"
#include "seqkv/proto/wire.h"
#include "seqkv/v1/seqkv.grpc.pb.h"

namespace seqkv::client {

struct Client::Stubs {
  std::shared_ptr<grpc::Channel> channel;
  std::unique_ptr<v1::KvStore::Stub> kv;
  std::unique_ptr<v1::Admin::Stub> admin;
};

namespace internal {

// Runs attempt(ctx) with a fresh context per attempt and one overall
// deadline, retrying UNAVAILABLE with exponential backoff. `attempt` must be
// idempotent (it is for every seqkv RPC: puts deduplicate). The returned
// Status names the method.
template <typename Attempt>
Status CallWithRetry(const ClientOptions& options, std::string_view method, Attempt&& attempt) {
  using Clock = std::chrono::system_clock;
  const Clock::time_point deadline = Clock::now() + options.deadline;
  auto backoff = std::chrono::duration<double, std::milli>(options.initial_backoff);
  for (int tries = 0;; ++tries) {
    grpc::ClientContext context;
    context.set_deadline(deadline);
    grpc::Status status = attempt(&context);
    if (status.ok()) return Status::Ok();
    bool retry = status.error_code() == grpc::StatusCode::UNAVAILABLE && tries < options.max_retries &&
                 Clock::now() + backoff < deadline;
    if (!retry) {
      return wire::FromGrpc(status).WithContext(std::string(method) + " " + options.address);
    }
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * options.backoff_multiplier,
                       std::chrono::duration<double, std::milli>(options.max_backoff));
  }
}

Tier TierFromProto(v1::Tier tier);

}  // namespace internal
}  // namespace seqkv::client
