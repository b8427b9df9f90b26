#include "rpc/rpc_metrics.h"

#include <prometheus/counter.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>
#include <spdlog/spdlog.h>

#include <exception>

#include "seqkv/proto/wire.h"

namespace seqkv::rpc {
namespace {

// 50 us .. ~100 s, x2 per bucket: unary calls sit at the bottom, 32 MiB
// chunk streams near the top.
prometheus::Histogram::BucketBoundaries LatencyBuckets() {
  prometheus::Histogram::BucketBoundaries bounds;
  for (double b = 50e-6; b < 120.0; b *= 2) bounds.push_back(b);
  return bounds;
}

constexpr std::string_view kMethods[] = {
    "Lookup", "Put", "Get", "Delete", "Pin", "Unpin", "Acquire", "Release", "Stats",
    "Status", "ListNamespaces", "RegisterNamespace", "DeleteNamespace", "Evict", "Compact", "Inspect"};

}  // namespace

RpcMetrics::~RpcMetrics() = default;

Result<std::unique_ptr<RpcMetrics>> RpcMetrics::Create(prometheus::Registry* registry) {
  std::unique_ptr<RpcMetrics> m(new RpcMetrics());
  if (registry == nullptr) return m;
  try {
    m->requests_ = &prometheus::BuildCounter()
                        .Name("seqkv_rpc_requests_total")
                        .Help("gRPC calls handled, by method and status code")
                        .Register(*registry);
    m->latency_ = &prometheus::BuildHistogram()
                       .Name("seqkv_rpc_latency_seconds")
                       .Help("gRPC call latency (whole stream for streaming calls), by method")
                       .Register(*registry);
    m->received_ = &prometheus::BuildCounter()
                        .Name("seqkv_rpc_received_bytes_total")
                        .Help("Chunk payload bytes received, by method")
                        .Register(*registry);
    m->sent_ = &prometheus::BuildCounter()
                    .Name("seqkv_rpc_sent_bytes_total")
                    .Help("Chunk payload bytes sent, by method")
                    .Register(*registry);
    // Create every method's series up front so /metrics lists them from the start.
    std::lock_guard<std::mutex> lock(m->mu_);
    for (std::string_view method : kMethods) m->MethodLocked(method);
  } catch (const std::exception& e) {
    return InvalidArgument(std::string("registering rpc metrics: ") + e.what());
  }
  return m;
}

RpcMetrics::MethodMetrics* RpcMetrics::MethodLocked(std::string_view method) {
  auto it = methods_.find(method);
  if (it != methods_.end()) return &it->second;
  MethodMetrics& mm = methods_[std::string(method)];
  std::string name(method);
  mm.latency = &latency_->Add({{"method", name}}, LatencyBuckets());
  mm.received = &received_->Add({{"method", name}});
  mm.sent = &sent_->Add({{"method", name}});
  mm.by_code[0] = &requests_->Add({{"method", name}, {"code", "OK"}});
  return &mm;
}

void RpcMetrics::Record(std::string_view method, grpc::StatusCode code, double seconds, uint64_t received_bytes,
                        uint64_t sent_bytes) {
  if (requests_ == nullptr) return;
  std::lock_guard<std::mutex> lock(mu_);
  MethodMetrics* mm = MethodLocked(method);
  auto it = mm->by_code.find(code);
  if (it == mm->by_code.end()) {
    Status as_status = wire::FromGrpc(grpc::Status(code, ""));
    std::string code_name(StatusCodeName(as_status.code()));
    it = mm->by_code.emplace(code, &requests_->Add({{"method", std::string(method)}, {"code", code_name}})).first;
  }
  it->second->Increment();
  mm->latency->Observe(seconds);
  if (received_bytes > 0) mm->received->Increment(static_cast<double>(received_bytes));
  if (sent_bytes > 0) mm->sent->Increment(static_cast<double>(sent_bytes));
}

bool CallGate::Enter() {
  std::lock_guard<std::mutex> lock(mu_);
  if (draining_) return false;
  ++in_flight_;
  return true;
}

void CallGate::Leave() {
  std::lock_guard<std::mutex> lock(mu_);
  if (--in_flight_ == 0) idle_.notify_all();
}

void CallGate::StartDraining() {
  std::lock_guard<std::mutex> lock(mu_);
  draining_ = true;
}

bool CallGate::WaitIdle(std::chrono::steady_clock::time_point deadline) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_.wait_until(lock, deadline, [this] { return in_flight_ == 0; });
}

CallScope::CallScope(RpcMetrics* metrics, CallGate* gate, std::string_view method)
    : metrics_(metrics), gate_(gate), method_(method), start_(std::chrono::steady_clock::now()) {
  if (gate_ != nullptr) admitted_ = gate_->Enter();
}

CallScope::~CallScope() {
  if (gate_ != nullptr && admitted_) gate_->Leave();
}

grpc::Status CallScope::Finish(grpc::Status status) {
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  if (metrics_ != nullptr) metrics_->Record(method_, status.error_code(), seconds, received_, sent_);
  Status s = wire::FromGrpc(status);
  std::string_view code = StatusCodeName(s.code());
  switch (s.code()) {
    case StatusCode::kNotFound:  // a miss or an unregistered namespace: routine
    case StatusCode::kOk:
      spdlog::debug("event=rpc method={} code={} ms={:.3f} rx_bytes={} tx_bytes={}{}{}", method_, code,
                    seconds * 1e3, received_, sent_, note_.empty() ? "" : " ", note_);
      break;
    case StatusCode::kInternal:
    case StatusCode::kUnknown:
    case StatusCode::kDataLoss:
    case StatusCode::kUnavailable:
      spdlog::error("event=rpc method={} code={} ms={:.3f} error=\"{}\"", method_, code, seconds * 1e3,
                    s.message());
      break;
    default:
      spdlog::info("event=rpc method={} code={} ms={:.3f} error=\"{}\"", method_, code, seconds * 1e3,
                   s.message());
  }
  return status;
}

}  // namespace seqkv::rpc
