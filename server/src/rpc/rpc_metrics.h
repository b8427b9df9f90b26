// Per-method request counters and latency histograms of the gRPC shell,
// registered on the same prometheus registry as the store's metrics:
//   seqkv_rpc_requests_total{method, code}
//   seqkv_rpc_latency_seconds{method}          (histogram)
//   seqkv_rpc_received_bytes_total{method}     (chunk payload bytes in)
//   seqkv_rpc_sent_bytes_total{method}         (chunk payload bytes out)
//
// Thread-safe. With a null registry every call is a no-op.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>

#include <grpcpp/support/status.h>

#include "seqkv/codec/status.h"

namespace prometheus {
class Counter;
class Histogram;
class Registry;
template <typename T>
class Family;
}  // namespace prometheus

namespace seqkv::rpc {

class RpcMetrics {
 public:
  // InvalidArgument if a family of one of these names but another type is
  // already registered.
  static Result<std::unique_ptr<RpcMetrics>> Create(prometheus::Registry* registry);
  ~RpcMetrics();

  // Records one finished call of `method` (a method name of seqkv.v1).
  void Record(std::string_view method, grpc::StatusCode code, double seconds, uint64_t received_bytes,
              uint64_t sent_bytes);

 private:
  struct MethodMetrics {
    prometheus::Histogram* latency = nullptr;
    prometheus::Counter* received = nullptr;
    prometheus::Counter* sent = nullptr;
    std::map<int, prometheus::Counter*> by_code;
  };
  RpcMetrics() = default;
  MethodMetrics* MethodLocked(std::string_view method);

  prometheus::Family<prometheus::Counter>* requests_ = nullptr;
  prometheus::Family<prometheus::Histogram>* latency_ = nullptr;
  prometheus::Family<prometheus::Counter>* received_ = nullptr;
  prometheus::Family<prometheus::Counter>* sent_ = nullptr;
  std::mutex mu_;
  std::map<std::string, MethodMetrics, std::less<>> methods_;
};

// Admission of calls, for a graceful stop: once draining, new calls are
// refused with UNAVAILABLE (clients retry that) while the calls in flight
// finish. Thread-safe.
class CallGate {
 public:
  bool Enter();  // false once draining
  void Leave();
  void StartDraining();
  // Waits until no call is in flight or the deadline passes; true if idle.
  bool WaitIdle(std::chrono::steady_clock::time_point deadline);

 private:
  std::mutex mu_;
  std::condition_variable idle_;
  int in_flight_ = 0;
  bool draining_ = false;
};

// One call: construct at the top of a handler (it enters the gate), return
// Refuse() if !admitted(), and pass the handler's result through Finish. It
// records the metrics and logs the call (spdlog, key=value): debug for OK
// and NOT_FOUND, info for other client errors, error for server errors.
class CallScope {
 public:
  // metrics and gate may be null.
  CallScope(RpcMetrics* metrics, CallGate* gate, std::string_view method);
  ~CallScope();
  CallScope(const CallScope&) = delete;
  CallScope& operator=(const CallScope&) = delete;

  bool admitted() const { return admitted_; }
  grpc::Status Refuse() { return Finish(grpc::Status(grpc::StatusCode::UNAVAILABLE, "server is shutting down")); }
  void AddReceived(uint64_t bytes) { received_ += bytes; }
  void AddSent(uint64_t bytes) { sent_ += bytes; }
  // Extra key=value text for the log line.
  void Note(std::string text) { note_ = std::move(text); }
  grpc::Status Finish(grpc::Status status);

 private:
  RpcMetrics* metrics_;
  CallGate* gate_;
  bool admitted_ = true;
  std::string_view method_;
  std::chrono::steady_clock::time_point start_;
  uint64_t received_ = 0;
  uint64_t sent_ = 0;
  std::string note_;
};

}  // namespace seqkv::rpc
