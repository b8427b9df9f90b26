// seqkv.v1.KvStore over a server::Store: converts requests, forwards to the
// store, converts results. No store logic lives here; the only state is the
// framing of the Put and Get streams (seqkv.proto documents it).
//
// Thread safety: gRPC calls the handlers from many threads; the service
// holds no mutable state, and Store is thread-safe.
#pragma once

#include <cstdint>

#include <grpcpp/grpcpp.h>

#include "rpc/rpc_metrics.h"
#include "seqkv/proto/wire.h"
#include "seqkv/server/store.h"
#include "seqkv/v1/seqkv.grpc.pb.h"

namespace seqkv::rpc {

struct ServiceOptions {
  // Largest chunk a Put stream may announce (INVALID_ARGUMENT above it, before
  // any byte is buffered). The store applies its own limit too.
  uint64_t max_chunk_bytes = uint64_t{256} << 20;
  // Get frame size when the request does not ask for one, and the largest a
  // request may ask for (keep it under the message size limit).
  uint32_t default_frame_bytes = wire::kDefaultFrameBytes;
  uint32_t max_frame_bytes = wire::kDefaultMaxMessageBytes - (64u << 10);
};

class KvStoreService final : public v1::KvStore::Service {
 public:
  // store, metrics and gate (both may be null) must outlive the service.
  KvStoreService(server::Store* store, RpcMetrics* metrics, CallGate* gate, const ServiceOptions& options);

  grpc::Status Lookup(grpc::ServerContext* context, const v1::LookupRequest* request,
                      v1::LookupResponse* response) override;
  grpc::Status Put(grpc::ServerContext* context, grpc::ServerReader<v1::PutRequest>* reader,
                   v1::PutResponse* response) override;
  grpc::Status Get(grpc::ServerContext* context, const v1::GetRequest* request,
                   grpc::ServerWriter<v1::GetResponse>* writer) override;
  grpc::Status Delete(grpc::ServerContext* context, const v1::DeleteRequest* request,
                      v1::DeleteResponse* response) override;
  grpc::Status Pin(grpc::ServerContext* context, const v1::PinRequest* request,
                   v1::PinResponse* response) override;
  grpc::Status Unpin(grpc::ServerContext* context, const v1::UnpinRequest* request,
                     v1::UnpinResponse* response) override;
  grpc::Status Acquire(grpc::ServerContext* context, const v1::AcquireRequest* request,
                       v1::AcquireResponse* response) override;
  grpc::Status Release(grpc::ServerContext* context, const v1::ReleaseRequest* request,
                       v1::ReleaseResponse* response) override;
  grpc::Status Stats(grpc::ServerContext* context, const v1::StatsRequest* request,
                     v1::StatsResponse* response) override;

 private:
  grpc::Status DoPut(grpc::ServerReader<v1::PutRequest>* reader, v1::PutResponse* response, CallScope* scope);
  grpc::Status DoGet(const v1::GetRequest& request, grpc::ServerWriter<v1::GetResponse>* writer,
                     CallScope* scope);

  server::Store* store_;
  RpcMetrics* metrics_;
  CallGate* gate_;
  ServiceOptions options_;
};

}  // namespace seqkv::rpc
