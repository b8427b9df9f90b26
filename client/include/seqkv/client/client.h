// The seqkv client: talks to one seqkv-server over gRPC (seqkv/v1/seqkv.proto).
//
// Three levels:
//  - encoded chunks: Lookup, BatchPut, BatchGet, Delete, Pin/Unpin, Acquire/Release;
//  - K/V: PutKv / GetKv encode a host K/V view with the namespace's codec
//    before Put and decode after Get;
//  - prefixes: PutPrefix / GetPrefix split a sequence into full chunks of
//    chunk_tokens, compute the chain keys (docs/keys.md), skip what is already
//    stored, and reassemble the longest stored prefix.
// Admin and statistics calls return the wire messages themselves (they are
// plain data records; duplicating them as structs would add nothing).
//
// Thread safety: a Client may be shared by many threads; every call is
// independent. Errors: the server's gRPC status is returned as the matching
// seqkv Status; UNAVAILABLE is retried with exponential backoff
// (ClientOptions); batched calls return one Status per item and fail as a
// whole only when the call itself fails.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "seqkv/codec/chunk.h"
#include "seqkv/codec/codec.h"
#include "seqkv/codec/status.h"
#include "seqkv/proto/keys.h"
#include "seqkv/proto/wire.h"
#include "seqkv/v1/seqkv.pb.h"

namespace seqkv::client {

struct ClientOptions {
  std::string address = "127.0.0.1:50051";
  // Deadline of each call (a streaming call as a whole), retries included.
  std::chrono::milliseconds deadline{120'000};
  // Connect waits this long for the server; 0 = connect lazily on first call.
  std::chrono::milliseconds connect_timeout{5'000};
  // Retries after UNAVAILABLE (0 = none), sleeping initial_backoff, then
  // multiplied by backoff_multiplier up to max_backoff, between attempts.
  int max_retries = 4;
  std::chrono::milliseconds initial_backoff{50};
  std::chrono::milliseconds max_backoff{2'000};
  double backoff_multiplier = 2.0;
  // Cap on one gRPC message in either direction; must match the server's.
  int max_message_bytes = wire::kDefaultMaxMessageBytes;
  // Chunk bytes per Put/Get frame.
  uint32_t frame_bytes = wire::kDefaultFrameBytes;
  // Largest encoded chunk the client accepts from Get.
  uint64_t max_chunk_bytes = uint64_t{1} << 30;
};

// Host K/V in [layers, kv_heads, tokens, head_dim] layout, not owned: the
// memory must stay valid for the duration of the call.
struct KvView {
  KvShape shape;
  DType dtype = DType::kBF16;
  RopeParams rope;
  uint64_t first_position = 0;
  std::span<const int32_t> tokens;  // shape.tokens ids
  std::span<const uint8_t> k;       // shape.elements() * DTypeSize(dtype) bytes
  std::span<const uint8_t> v;

  static KvView Of(const Chunk& chunk);
};

enum class Tier : uint8_t { kNone = 0, kDram = 1, kDisk = 2 };

struct ChunkPresence {
  bool present = false;
  uint64_t size_bytes = 0;
  Tier tier = Tier::kNone;
  std::string codec_spec;
};

struct LookupResult {
  uint32_t prefix_chunks = 0;         // usable leading chunks
  std::vector<ChunkPresence> chunks;  // one per key
};

// One encoded chunk to store.
struct PutItem {
  Key128 key;
  std::optional<Key128> parent;     // unset for the first chunk of a sequence
  std::span<const uint8_t> encoded; // not owned
  bool pin = false;
};

struct PutItemResult {
  Status status;
  bool deduplicated = false;
  uint64_t size_bytes = 0;
  Tier tier = Tier::kNone;
};

struct PutPrefixOptions {
  bool pin = false;           // pin every chunk put
  bool skip_present = true;   // Lookup first and send only missing chunks
  // Code each chunk in the context of the one before it when the codec can
  // (seq's lossy modes: ~7% smaller 256-token chunks). GetPrefix decodes
  // prefixes from the root, so the parent is always at hand; a child whose
  // stored parent is not the one it was coded after reads as a miss. When
  // the Lookup finds a stored prefix, the first new chunk starts fresh.
  bool parent_conditioned = true;
  // Called from the calling thread after the Lookup and after each Put stream
  // (about 256 MiB of encoded chunks); chunks_done counts chunks now stored.
  std::function<void(uint32_t chunks_done, uint32_t chunks_total)> progress;
};

struct PutPrefixResult {
  uint32_t chunks = 0;        // full chunks in the sequence
  uint32_t already_present = 0;  // skipped after Lookup (or deduplicated)
  uint32_t stored = 0;        // newly written
  uint64_t sent_bytes = 0;    // encoded bytes sent
  uint64_t raw_bytes = 0;     // K+V bytes of the chunks sent
  std::vector<Key128> keys;   // chain keys of the full chunks
};

struct GetPrefixResult {
  uint32_t chunks = 0;  // chunks of the longest stored prefix
  Chunk kv;             // those chunks assembled; kv.shape.tokens == chunks * chunk_tokens
};

class Client {
 public:
  // Creates a channel to options.address and, unless connect_timeout is 0,
  // waits until it is connected (Unavailable if not in time).
  static Result<std::unique_ptr<Client>> Connect(const ClientOptions& options);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const ClientOptions& options() const { return options_; }

  // ---- namespaces and keys (local computation, no RPC)
  // The namespace with its codec_spec replaced by the codec's canonical,
  // fully explicit spec (so "lossless" and its explicit form share one id).
  static Result<NamespaceFields> Canonicalize(const NamespaceFields& fields);
  static std::vector<Key128> Keys(const NamespaceFields& fields, std::span<const int32_t> tokens);

  // ---- encoded chunks
  Result<Key128> RegisterNamespace(const NamespaceFields& fields);
  Result<LookupResult> Lookup(const Key128& ns, std::span<const Key128> keys);
  // Single-item forms of BatchPut / BatchGet (the item's status is returned).
  Result<PutItemResult> Put(const Key128& ns, const PutItem& item);
  Result<std::vector<uint8_t>> Get(const Key128& ns, const Key128& key);
  // One stream for all items. `register_fields`, if given, registers the
  // namespace first (ns must equal its id). The outer Result fails only if
  // the call fails; otherwise one PutItemResult per item.
  Result<std::vector<PutItemResult>> BatchPut(const Key128& ns, std::span<const PutItem> items,
                                              const NamespaceFields* register_fields = nullptr);
  // One Result per key: the encoded chunk, or NotFound / DataLoss / ...
  Result<std::vector<Result<std::vector<uint8_t>>>> BatchGet(const Key128& ns, std::span<const Key128> keys);
  Result<std::vector<v1::DeleteResult>> Delete(const Key128& ns, std::span<const Key128> keys, bool force = false);
  Result<std::vector<Status>> Pin(const Key128& ns, std::span<const Key128> keys);
  Result<std::vector<Status>> Unpin(const Key128& ns, std::span<const Key128> keys);
  Result<v1::AcquireResponse> Acquire(const Key128& ns, std::span<const Key128> keys);
  Status Release(uint64_t lease_id);

  // ---- K/V (encode with the namespace's codec; decode with the header's)
  // Encodes one chunk of exactly fields.chunk_tokens tokens at position
  // first_position, validating the view.
  static Result<std::vector<uint8_t>> EncodeKv(const NamespaceFields& fields, const KvView& kv);
  // Decodes and checks the chunk's token ids against `expected_tokens`
  // (DataLoss on mismatch) when not empty.
  static Result<Chunk> DecodeKv(std::span<const uint8_t> encoded, std::span<const int32_t> expected_tokens);
  // The same for a chunk of a prefix: `parent` is the context of the chunk
  // before it (null for the first), *next receives this chunk's context.
  static Result<Chunk> DecodeKv(std::span<const uint8_t> encoded, std::span<const int32_t> expected_tokens,
                                const ChunkContext* parent, ChunkContext* next);

  // ---- prefixes
  // Stores the full chunks of kv (kv.first_position must be 0: keys chain
  // from the start of the sequence). Registers the namespace implicitly.
  Result<PutPrefixResult> PutPrefix(const NamespaceFields& fields, const KvView& kv,
                                    const PutPrefixOptions& options = {});
  // The longest stored prefix of `tokens`, decoded and assembled.
  Result<GetPrefixResult> GetPrefix(const NamespaceFields& fields, std::span<const int32_t> tokens);

  // ---- statistics and administration
  Result<v1::StatsResponse> Stats();
  Result<v1::StatusResponse> ServerStatus();
  Result<v1::ListNamespacesResponse> ListNamespaces();
  Result<v1::DeleteNamespaceResponse> DeleteNamespace(const Key128& ns, bool force = false);
  Result<v1::EvictResponse> Evict(const v1::EvictRequest& request);
  Status Compact();
  Result<v1::InspectResponse> Inspect(const Key128& ns, const Key128& key);

 private:
  struct Stubs;
  explicit Client(const ClientOptions& options, std::unique_ptr<Stubs> stubs);

  ClientOptions options_;
  std::unique_ptr<Stubs> stubs_;
};

// Concatenates chunks along the token axis ([L, H, T, D] layout): shapes
// except tokens, dtype and rope must agree, and positions must be contiguous.
Result<Chunk> ConcatChunks(std::span<const Chunk> chunks);
// Tokens [begin, begin + count) of kv as an owned chunk.
Result<Chunk> SliceKv(const KvView& kv, uint32_t begin, uint32_t count);

}  // namespace seqkv::client
