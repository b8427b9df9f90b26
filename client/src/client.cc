// Connection, retries and the unary calls of the client.
#include "seqkv/client/client.h"

#include "call.h"
#include "seqkv/codec/codec.h"

namespace seqkv::client {

using internal::CallWithRetry;

namespace internal {

Tier TierFromProto(v1::Tier tier) {
  switch (tier) {
    case v1::TIER_DRAM: return Tier::kDram;
    case v1::TIER_DISK: return Tier::kDisk;
    default: return Tier::kNone;
  }
}

}  // namespace internal

namespace {

Result<std::vector<Status>> ItemStatuses(const google::protobuf::RepeatedPtrField<v1::ItemStatus>& items,
                                         size_t expected, std::string_view method) {
  if (static_cast<size_t>(items.size()) != expected) {
    return Internal(std::string(method) + ": server answered " + std::to_string(items.size()) +
                    " results for " + std::to_string(expected) + " items");
  }
  std::vector<Status> out;
  out.reserve(expected);
  for (const v1::ItemStatus& item : items) out.push_back(wire::FromItemStatus(item));
  return out;
}

}  // namespace

KvView KvView::Of(const Chunk& chunk) {
  KvView view;
  view.shape = chunk.shape;
  view.dtype = chunk.dtype;
  view.rope = chunk.rope;
  view.first_position = chunk.first_position;
  view.tokens = chunk.tokens;
  view.k = chunk.k;
  view.v = chunk.v;
  return view;
}

Client::Client(const ClientOptions& options, std::unique_ptr<Stubs> stubs)
    : options_(options), stubs_(std::move(stubs)) {}

Client::~Client() = default;

Result<std::unique_ptr<Client>> Client::Connect(const ClientOptions& options) {
  if (options.address.empty()) return InvalidArgument("client: address is empty");
  if (options.frame_bytes == 0 || options.frame_bytes + (64u << 10) > static_cast<uint32_t>(options.max_message_bytes)) {
    return InvalidArgument("client: frame_bytes must be positive and 64 KiB below max_message_bytes");
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(options.max_message_bytes);
  args.SetMaxSendMessageSize(options.max_message_bytes);
  args.SetInt(GRPC_ARG_ENABLE_RETRIES, 0);  // we retry ourselves, with our own budget
  // Each Client gets its own connection (tests run many "sessions" in one process).
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  auto stubs = std::make_unique<Stubs>();
  stubs->channel = grpc::CreateCustomChannel(options.address, grpc::InsecureChannelCredentials(), args);
  if (options.connect_timeout.count() > 0) {
    auto deadline = std::chrono::system_clock::now() + options.connect_timeout;
    if (!stubs->channel->WaitForConnected(deadline)) {
      return Unavailable("client: cannot connect to " + options.address + " within " +
                         std::to_string(options.connect_timeout.count()) + " ms");
    }
  }
  stubs->kv = v1::KvStore::NewStub(stubs->channel);
  stubs->admin = v1::Admin::NewStub(stubs->channel);
  return std::unique_ptr<Client>(new Client(options, std::move(stubs)));
}

Result<NamespaceFields> Client::Canonicalize(const NamespaceFields& fields) {
  SEQKV_ASSIGN_OR_RETURN(auto codec, MakeCodec(fields.codec_spec));
  NamespaceFields out = fields;
  out.codec_spec = codec->Spec();
  SEQKV_RETURN_IF_ERROR(ValidateNamespace(out));
  return out;
}

std::vector<Key128> Client::Keys(const NamespaceFields& fields, std::span<const int32_t> tokens) {
  return ChunkKeys(NamespaceId(fields), tokens, fields.chunk_tokens);
}

Result<Key128> Client::RegisterNamespace(const NamespaceFields& fields) {
  v1::RegisterNamespaceRequest request;
  wire::NamespaceToProto(fields, request.mutable_fields());
  v1::RegisterNamespaceResponse response;
  SEQKV_RETURN_IF_ERROR(CallWithRetry(options_, "RegisterNamespace", [&](grpc::ClientContext* ctx) {
    return stubs_->admin->RegisterNamespace(ctx, request, &response);
  }));
  return wire::KeyFromBytes(response.namespace_id(), "namespace_id");
}

Result<LookupResult> Client::Lookup(const Key128& ns, std::span<const Key128> keys) {
  v1::LookupRequest request;
  request.set_namespace_id(wire::KeyToBytes(ns));
  wire::KeysToBytes(keys, request.mutable_chunk_keys());
  v1::LookupResponse response;
  SEQKV_RETURN_IF_ERROR(CallWithRetry(options_, "Lookup", [&](grpc::ClientContext* ctx) {
    return stubs_->kv->Lookup(ctx, request, &response);
  }));
  if (static_cast<size_t>(response.chunks_size()) != keys.size() || response.prefix_chunks() > keys.size()) {
    return Internal("Lookup: server answered an inconsistent result");
  }
  LookupResult out;
  out.prefix_chunks = response.prefix_chunks();
  out.chunks.reserve(keys.size());
  for (const v1::ChunkPresence& p : response.chunks()) {
    out.chunks.push_back({p.present(), p.size_bytes(), internal::TierFromProto(p.tier()), p.codec_spec()});
  }
  return out;
}

Result<std::vector<v1::DeleteResult>> Client::Delete(const Key128& ns, std::span<const Key128> keys, bool force) {
  v1::DeleteRequest request;
  request.set_namespace_id(wire::KeyToBytes(ns));
  wire::KeysToBytes(keys, request.mutable_chunk_keys());
  request.set_force(force);
  v1::DeleteResponse response;
  SEQKV_RETURN_IF_ERROR(CallWithRetry(options_, "Delete", [&](grpc::ClientContext* ctx) {
    return stubs_->kv->Delete(ctx, request, &response);
  }));
  if (static_cast<size_t>(response.results_size()) != keys.size()) {
    return Internal("Delete: server answered a result count that differs from the request");
  }
  return std::vector<v1::DeleteResult>(response.results().begin(), response.results().end());
}

Result<std::vector<Status>> Client::Pin(const Key128& ns, std::span<const Key128> keys) {
  v1::PinRequest request;
  request.set_namespace_id(wire::KeyToBytes(ns));
  wire::KeysToBytes(keys, request.mutable_chunk_keys());
  v1::PinResponse response;
  SEQKV_RETURN_IF_ERROR(CallWithRetry(options_, "Pin", [&](grpc::ClientContext* ctx) {
    return stubs_->kv->Pin(ctx, request, &response);
  }));
  return ItemStatuses(response.results(), keys.size(), "Pin");
}

Result<std::vector<Status>> Client::Unpin(const Key128& ns, std::span<const Key128> keys) {
  v1::UnpinRequest request;
  request.set_namespace_id(wire::KeyToBytes(ns));
  wire::KeysToBytes(keys, request.mutable_chunk_keys());
  v1::UnpinResponse response;
  SEQKV_RETURN_IF_ERROR(CallWithRetry(options_, "Unpin", [&](grpc::ClientContext* ctx) {
    return stubs_->kv->Unpin(ctx, request, &response);
  }));
  return ItemStatuses(response.results(), keys.size(), "Unpin");
}

Result<v1::AcquireResponse> Client::Acquire(const Key128& ns, std::span<const Key128> keys) {
  v1::AcquireRequest request;
  request.set_namespace_id(wire::KeyToBytes(ns));
  wire::KeysToBytes(keys, request.mutable_chunk_keys());
  v1::AcquireResponse response;
  SEQKV_RETURN_IF_ERROR(CallWithRetry(options_, "Acquire", [&](grpc::ClientContext* ctx) {
    return stubs_->kv->Acquire(ctx, request, &response);
  }));
  return response;
}

Status Client::Release(uint64_t lease_id) {
  v1::ReleaseRequest request;
  request.set_lease_id(lease_id);
  v1::ReleaseResponse response;
  return CallWithRetry(options_, "Release", [&](grpc::ClientContext* ctx) {
    return stubs_->kv->Release(ctx, request, &response);
  });
}

Result<v1::StatsResponse> Client::Stats() {
  v1::StatsResponse response;
  SEQKV_RETURN_IF_ERROR(CallWithRetry(options_, "Stats", [&](grpc::ClientContext* ctx) {
    return stubs_->kv->Stats(ctx, v1::StatsRequest(), &response);
  }));
  return response;
}

Result<v1::StatusResponse> Client::ServerStatus() {
  v1::StatusResponse response;
  SEQKV_RETURN_IF_ERROR(CallWithRetry(options_, "Status", [&](grpc::ClientContext* ctx) {
    return stubs_->admin->Status(ctx, v1::StatusRequest(), &response);
  }));
  return response;
}

Result<v1::ListNamespacesResponse> Client::ListNamespaces() {
  v1::ListNamespacesResponse response;
  SEQKV_RETURN_IF_ERROR(CallWithRetry(options_, "ListNamespaces", [&](grpc::ClientContext* ctx) {
    return stubs_->admin->ListNamespaces(ctx, v1::ListNamespacesRequest(), &response);
  }));
  return response;
}

Result<v1::DeleteNamespaceResponse> Client::DeleteNamespace(const Key128& ns, bool force) {
  v1::DeleteNamespaceRequest request;
  request.set_namespace_id(wire::KeyToBytes(ns));
  request.set_force(force);
  v1::DeleteNamespaceResponse response;
  SEQKV_RETURN_IF_ERROR(CallWithRetry(options_, "DeleteNamespace", [&](grpc::ClientContext* ctx) {
    return stubs_->admin->DeleteNamespace(ctx, request, &response);
  }));
  return response;
}

Result<v1::EvictResponse> Client::Evict(const v1::EvictRequest& request) {
  v1::EvictResponse response;
  SEQKV_RETURN_IF_ERROR(CallWithRetry(options_, "Evict", [&](grpc::ClientContext* ctx) {
    return stubs_->admin->Evict(ctx, request, &response);
  }));
  return response;
}

Status Client::Compact() {
  v1::CompactResponse response;
  return CallWithRetry(options_, "Compact", [&](grpc::ClientContext* ctx) {
    return stubs_->admin->Compact(ctx, v1::CompactRequest(), &response);
  });
}

Result<v1::InspectResponse> Client::Inspect(const Key128& ns, const Key128& key) {
  v1::InspectRequest request;
  request.set_namespace_id(wire::KeyToBytes(ns));
  request.set_chunk_key(wire::KeyToBytes(key));
  v1::InspectResponse response;
  SEQKV_RETURN_IF_ERROR(CallWithRetry(options_, "Inspect", [&](grpc::ClientContext* ctx) {
    return stubs_->admin->Inspect(ctx, request, &response);
  }));
  return response;
}

}  // namespace seqkv::client
