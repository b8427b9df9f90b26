// The streaming calls of the client: BatchPut (client stream of frames) and
// BatchGet (server stream of frames). The framing is specified in
// proto/seqkv/v1/seqkv.proto (PutRequest, GetResponse).
#include <algorithm>
#include <cstring>

#include "call.h"
#include "seqkv/client/client.h"

namespace seqkv::client {

using internal::CallWithRetry;

Result<std::vector<PutItemResult>> Client::BatchPut(const Key128& ns, std::span<const PutItem> items,
                                                    const NamespaceFields* register_fields) {
  if (register_fields != nullptr && NamespaceId(*register_fields) != ns) {
    return InvalidArgument("BatchPut: namespace id differs from NamespaceId(register_fields)");
  }
  if (items.empty()) return std::vector<PutItemResult>();
  const std::string ns_bytes = wire::KeyToBytes(ns);
  v1::PutResponse response;
  SEQKV_RETURN_IF_ERROR(CallWithRetry(options_, "Put", [&](grpc::ClientContext* ctx) {
    response.Clear();
    std::unique_ptr<grpc::ClientWriter<v1::PutRequest>> writer = stubs_->kv->Put(ctx, &response);
    v1::PutRequest frame;
    bool first = true;
    bool broken = false;
    for (const PutItem& item : items) {
      size_t offset = 0;
      do {
        frame.Clear();
        if (first) {
          frame.set_namespace_id(ns_bytes);
          if (register_fields != nullptr) wire::NamespaceToProto(*register_fields, frame.mutable_namespace_());
          first = false;
        }
        if (offset == 0) {
          v1::PutChunkBegin* begin = frame.mutable_begin();
          begin->set_key(wire::KeyToBytes(item.key));
          if (item.parent) begin->set_parent_key(wire::KeyToBytes(*item.parent));
          begin->set_total_bytes(item.encoded.size());
          begin->set_pin(item.pin);
        }
        size_t n = std::min<size_t>(options_.frame_bytes, item.encoded.size() - offset);
        frame.set_data(reinterpret_cast<const char*>(item.encoded.data()) + offset, n);
        offset += n;
        // A failed write means the stream is broken; Finish says why.
        if (!writer->Write(frame)) broken = true;
      } while (!broken && offset < item.encoded.size());
      if (broken) break;
    }
    if (!broken) writer->WritesDone();
    return writer->Finish();
  }));
  if (static_cast<size_t>(response.results_size()) != items.size()) {
    return Internal("Put: server answered " + std::to_string(response.results_size()) + " results for " +
                    std::to_string(items.size()) + " chunks");
  }
  std::vector<PutItemResult> out;
  out.reserve(items.size());
  for (const v1::PutResult& r : response.results()) {
    out.push_back({wire::FromItemStatus(r.status()), r.deduplicated(), r.size_bytes(),
                   internal::TierFromProto(r.tier())});
  }
  return out;
}

Result<PutItemResult> Client::Put(const Key128& ns, const PutItem& item) {
  SEQKV_ASSIGN_OR_RETURN(std::vector<PutItemResult> results, BatchPut(ns, std::span<const PutItem>(&item, 1)));
  if (!results[0].status.ok()) return results[0].status;
  return results[0];
}

Result<std::vector<Result<std::vector<uint8_t>>>> Client::BatchGet(const Key128& ns,
                                                                   std::span<const Key128> keys) {
  using Item = Result<std::vector<uint8_t>>;
  std::vector<Item> out;
  if (keys.empty()) return out;
  v1::GetRequest request;
  request.set_namespace_id(wire::KeyToBytes(ns));
  wire::KeysToBytes(keys, request.mutable_chunk_keys());
  request.set_max_frame_bytes(options_.frame_bytes);
  SEQKV_RETURN_IF_ERROR(CallWithRetry(options_, "Get", [&](grpc::ClientContext* ctx) {
    out.clear();
    out.reserve(keys.size());
    std::unique_ptr<grpc::ClientReader<v1::GetResponse>> reader = stubs_->kv->Get(ctx, request);
    v1::GetResponse frame;
    std::vector<uint8_t> current;
    bool in_item = false;
    uint64_t received = 0;
    std::string protocol_error;
    while (protocol_error.empty() && reader->Read(&frame)) {
      if (frame.has_status()) {
        if (in_item || frame.index() != out.size() || out.size() >= keys.size()) {
          protocol_error = "item frame out of order";
          break;
        }
        Status item = wire::FromItemStatus(frame.status());
        if (!item.ok()) {
          out.push_back(item);
          continue;
        }
        if (frame.total_bytes() > options_.max_chunk_bytes) {
          protocol_error = "chunk of " + std::to_string(frame.total_bytes()) + " bytes exceeds max_chunk_bytes";
          break;
        }
        current.assign(frame.total_bytes(), 0);
        received = 0;
        in_item = true;
      } else if (!in_item || frame.index() != out.size()) {
        protocol_error = "data frame without an open item";
        break;
      }
      if (frame.offset() != received || frame.data().size() > current.size() - received) {
        protocol_error = "data frame at a wrong offset or past total_bytes";
        break;
      }
      std::memcpy(current.data() + received, frame.data().data(), frame.data().size());
      received += frame.data().size();
      if (received == current.size()) {
        out.push_back(std::move(current));
        current = {};
        in_item = false;
      }
    }
    if (!protocol_error.empty()) {
      ctx->TryCancel();
      (void)reader->Finish();
      return grpc::Status(grpc::StatusCode::INTERNAL, "malformed Get stream: " + protocol_error);
    }
    grpc::Status status = reader->Finish();
    if (status.ok() && out.size() != keys.size()) {
      return grpc::Status(grpc::StatusCode::INTERNAL, "Get stream ended after " + std::to_string(out.size()) +
                                                          " of " + std::to_string(keys.size()) + " items");
    }
    return status;
  }));
  return out;
}

Result<std::vector<uint8_t>> Client::Get(const Key128& ns, const Key128& key) {
  SEQKV_ASSIGN_OR_RETURN(auto results, BatchGet(ns, std::span<const Key128>(&key, 1)));
  return std::move(results[0]);
}

}  // namespace seqkv::client
