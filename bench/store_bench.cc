// Store benchmark: put/get throughput and latency of seqkv-server against
// Redis 7 with the same payloads, in one run. bench/run_store_bench.sh starts
// the servers and passes their addresses:
//   SEQKV_BENCH_SERVER         seqkv-server with default (durable, fsync) settings
//   SEQKV_BENCH_SERVER_NOSYNC  seqkv-server with sync_writes: false (small ops only)
//   SEQKV_BENCH_REDIS          redis-server, no persistence
// Any of them may be missing; its benchmarks are then not registered.
//
// Payloads:
//  - big: one 256-token chunk of Llama-3-8B shape (32 layers x 8 KV heads x
//    128 dims, bf16): 32 MiB of K+V, encoded with codec raw or lossless;
//  - small: 16 KiB chunks (2 x 2 x 16 tokens x 64 dims, bf16, raw).
// Times are wall-clock per call (latency); p50/p99 counters are per op.
#include <arpa/inet.h>
#include <benchmark/benchmark.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "seqkv/client/client.h"
#include "seqkv/codec/dtype.h"

namespace {

using seqkv::Chunk;
using seqkv::Key128;
using seqkv::KvShape;
using seqkv::NamespaceFields;
using seqkv::client::Client;
using seqkv::client::KvView;
using seqkv::client::PutItem;

constexpr int kBigIterations = 16;      // 512 MiB of raw KV per put benchmark
constexpr int kSmallIterations = 2000;  // single-op calls
constexpr int kBatch = 64;              // chunks per batched call
constexpr int kBatchIterations = 40;

// --------------------------------------------------------------- Redis (RESP)

// A minimal blocking RESP2 client: SET/GET of binary values, pipelined.
class Resp {
 public:
  bool Connect(const std::string& host_port) {
    size_t colon = host_port.rfind(':');
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(std::atoi(host_port.c_str() + colon + 1)));
    inet_pton(AF_INET, host_port.substr(0, colon).c_str(), &addr.sin_addr);
    fd_ = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd_ >= 0 && connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~Resp() {
    if (fd_ >= 0) close(fd_);
  }
  // Appends a command to the pipeline; Flush sends it.
  void Command(std::initializer_list<std::string_view> args) {
    out_ += "*" + std::to_string(args.size()) + "\r\n";
    for (std::string_view a : args) {
      out_ += "$" + std::to_string(a.size()) + "\r\n";
      out_.append(a);
      out_ += "\r\n";
    }
  }
  bool Flush() {
    size_t sent = 0;
    while (sent < out_.size()) {
      ssize_t n = send(fd_, out_.data() + sent, out_.size() - sent, 0);
      if (n <= 0) return false;
      sent += static_cast<size_t>(n);
    }
    out_.clear();
    return true;
  }
  // Reads one reply: a simple string / error / bulk string (value filled).
  bool Reply(std::string* value) {
    std::string line;
    if (!Line(&line) || line.empty()) return false;
    if (line[0] == '+') return true;
    if (line[0] != '$') return false;  // '-' error or unexpected
    long len = std::atol(line.c_str() + 1);
    if (len < 0) return false;  // nil
    if (!Bytes(static_cast<size_t>(len) + 2, value)) return false;
    value->resize(static_cast<size_t>(len));
    return true;
  }

 private:
  bool Fill() {
    if (pos_ > 0 && pos_ == in_.size()) {
      in_.clear();
      pos_ = 0;
    }
    char buf[1 << 16];
    ssize_t n = recv(fd_, buf, sizeof buf, 0);
    if (n <= 0) return false;
    in_.append(buf, static_cast<size_t>(n));
    return true;
  }
  bool Line(std::string* line) {
    size_t eol;
    while ((eol = in_.find("\r\n", pos_)) == std::string::npos) {
      if (!Fill()) return false;
    }
    line->assign(in_, pos_, eol - pos_);
    pos_ = eol + 2;
    return true;
  }
  bool Bytes(size_t n, std::string* out) {
    out->clear();
    out->reserve(n);
    while (out->size() < n) {
      if (pos_ == in_.size() && !Fill()) return false;
      size_t take = std::min(n - out->size(), in_.size() - pos_);
      out->append(in_, pos_, take);
      pos_ += take;
    }
    return true;
  }
  int fd_ = -1;
  std::string out_, in_;
  size_t pos_ = 0;
};

// ----------------------------------------------------------------- payloads

Chunk MakeKv(const KvShape& shape, uint64_t seed) {
  Chunk c;
  c.shape = shape;
  c.dtype = seqkv::DType::kBF16;
  c.rope = {seqkv::RopeStyle::kRotateHalf, 500000.0, shape.head_dim};
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  c.tokens.resize(shape.tokens);
  for (auto& t : c.tokens) t = static_cast<int32_t>(rng() % 128000);
  std::vector<float> values(shape.elements());
  for (auto* tensor : {&c.k, &c.v}) {
    for (size_t i = 0; i < values.size(); ++i) values[i] = normal(rng) * ((i % shape.head_dim) % 16 == 3 ? 6.f : 1.f);
    tensor->resize(values.size() * 2);
    seqkv::FromFloat(c.dtype, values.data(), values.size(), tensor->data());
  }
  return c;
}

NamespaceFields Namespace(const std::string& codec, uint32_t chunk_tokens) {
  NamespaceFields f;
  f.model_name = "llama-3-8b-synthetic";
  f.model_config_hash = "bench";
  f.chunk_tokens = chunk_tokens;
  f.codec_spec = codec;
  auto canonical = Client::Canonicalize(f);
  return canonical.ok() ? *canonical : f;
}

struct Encoded {
  Key128 key;
  std::vector<uint8_t> bytes;
};

// The first chunk of a fresh sequence: distinct token ids -> distinct key.
Encoded EncodeFresh(const NamespaceFields& ns, Chunk* kv, int32_t id) {
  kv->tokens[0] = id;
  Encoded e;
  e.key = Client::Keys(ns, kv->tokens)[0];
  e.bytes = std::move(Client::EncodeKv(ns, KvView::Of(*kv))).value();
  return e;
}

// ------------------------------------------------------------------ helpers

struct Latencies {
  std::vector<double> us;
  void Time(auto&& fn) {
    auto start = std::chrono::steady_clock::now();
    fn();
    us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count());
  }
  void Report(benchmark::State& state) {
    if (us.empty()) return;
    std::sort(us.begin(), us.end());
    state.counters["p50_us"] = us[us.size() / 2];
    state.counters["p99_us"] = us[std::min(us.size() - 1, us.size() * 99 / 100)];
  }
};

struct Targets {
  std::map<std::string, std::string> seqkv;  // label -> address
  std::string redis;
};

std::unique_ptr<Client> ConnectSeqkv(const std::string& address) {
  seqkv::client::ClientOptions options;
  options.address = address;
  auto client = Client::Connect(options);
  return client.ok() ? std::move(client).value() : nullptr;
}

int32_t NextId() {
  static int32_t next = 1'000'000;
  return next++;
}

// ---------------------------------------------------------- seqkv benchmarks

// Put of pre-encoded chunks (encoding excluded), or Get of stored ones.
void SeqkvPutGet(benchmark::State& state, const std::string& address, const std::string& codec,
                 const KvShape& shape, bool get, int batch) {
  auto client = ConnectSeqkv(address);
  if (!client) return state.SkipWithError("cannot connect to seqkv-server");
  NamespaceFields ns = Namespace(codec, shape.tokens);
  const Key128 id = seqkv::NamespaceId(ns);
  if (!client->RegisterNamespace(ns).ok()) return state.SkipWithError("RegisterNamespace failed");
  Chunk kv = MakeKv(shape, 42);
  // Small payloads are all prepared up front. A big put re-encodes one
  // payload per iteration outside the timing (distinct keys need distinct
  // token ids: the server checks key == hash(tokens)); a big get cycles over 4.
  const bool big = shape.elements() * 4 > (1u << 20);
  const int total = static_cast<int>(state.max_iterations) * batch;
  const int prepared = big ? (get ? 4 : 1) : total;
  std::vector<Encoded> payloads;
  for (int i = 0; i < prepared; ++i) payloads.push_back(EncodeFresh(ns, &kv, NextId()));
  auto items_from = [&](int first) {
    std::vector<PutItem> items;
    for (int j = 0; j < batch; ++j) {
      const Encoded& e = payloads[(first + j) % payloads.size()];
      items.push_back({e.key, std::nullopt, e.bytes});
    }
    return items;
  };
  if (get) {
    for (int i = 0; i < prepared; i += batch) {
      auto r = client->BatchPut(id, items_from(i));
      if (!r.ok()) return state.SkipWithError(r.status().ToString().c_str());
    }
  }
  Latencies lat;
  uint64_t bytes = 0;
  int op = 0;
  bool failed = false;
  for (auto _ : state) {
    if (failed) break;
    if (!get && big) {
      state.PauseTiming();
      payloads[0] = EncodeFresh(ns, &kv, NextId());
      state.ResumeTiming();
    }
    if (get) {
      std::vector<Key128> keys;
      for (int j = 0; j < batch; ++j) keys.push_back(payloads[(op * batch + j) % payloads.size()].key);
      lat.Time([&] {
        auto r = client->BatchGet(id, keys);
        if (!r.ok() || !(*r)[0].ok()) {
          failed = true;
          return state.SkipWithError("get failed");
        }
        for (auto& item : *r) bytes += item.ok() ? item->size() : 0;
      });
    } else {
      auto items = items_from(big ? 0 : op * batch);
      lat.Time([&] {
        auto r = client->BatchPut(id, items);
        if (!r.ok() || !(*r)[0].status.ok()) {
          failed = true;
          state.SkipWithError(r.ok() ? (*r)[0].status.ToString().c_str() : r.status().ToString().c_str());
        }
      });
      for (const auto& item : items) bytes += item.encoded.size();
    }
    ++op;
  }
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * batch);
  state.counters["chunk_bytes"] = static_cast<double>(payloads[0].bytes.size());
  state.counters["raw_bytes"] = static_cast<double>(shape.elements() * 4);
  lat.Report(state);
}

// End to end, K/V in host memory: encode + PutPrefix, or GetPrefix + decode.
// Bytes/s are raw K+V bytes.
void SeqkvKvRoundTrip(benchmark::State& state, const std::string& address, const std::string& codec, bool get) {
  auto client = ConnectSeqkv(address);
  if (!client) return state.SkipWithError("cannot connect to seqkv-server");
  const KvShape shape{32, 8, 256, 128};
  NamespaceFields ns = Namespace(codec, shape.tokens);
  Chunk kv = MakeKv(shape, 43);
  if (get) {
    kv.tokens[0] = NextId();
    auto r = client->PutPrefix(ns, KvView::Of(kv));
    if (!r.ok()) return state.SkipWithError(r.status().ToString().c_str());
  }
  Latencies lat;
  bool failed = false;
  for (auto _ : state) {
    if (failed) break;
    if (!get) kv.tokens[0] = NextId();
    lat.Time([&] {
      if (get) {
        auto r = client->GetPrefix(ns, kv.tokens);
        failed = !r.ok() || r->chunks != 1;
      } else {
        failed = !client->PutPrefix(ns, KvView::Of(kv)).ok();
      }
      if (failed) state.SkipWithError(get ? "GetPrefix failed" : "PutPrefix failed");
    });
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * shape.elements() * 4));
  lat.Report(state);
}

// ---------------------------------------------------------- Redis benchmarks

void RedisSetGet(benchmark::State& state, const std::string& address, const std::string& codec,
                 const KvShape& shape, bool get, int batch) {
  Resp redis;
  if (!redis.Connect(address)) return state.SkipWithError("cannot connect to redis");
  NamespaceFields ns = Namespace(codec, shape.tokens);
  Chunk kv = MakeKv(shape, 42);
  Encoded payload = EncodeFresh(ns, &kv, 7);  // same bytes as the seqkv puts (contents do not matter to Redis)
  const std::string_view value(reinterpret_cast<const char*>(payload.bytes.data()), payload.bytes.size());
  const int total = static_cast<int>(state.max_iterations) * batch;
  const int distinct = shape.elements() * 4 > (1u << 20) ? std::min(total, 16) : total;
  std::string reply;
  std::string prefix = "bench:" + codec + ":" + std::to_string(shape.tokens) + ":";
  if (get) {
    for (int i = 0; i < distinct; ++i) {
      redis.Command({"SET", prefix + std::to_string(i), value});
      if (!redis.Flush() || !redis.Reply(&reply)) return state.SkipWithError("SET failed");
    }
  }
  Latencies lat;
  uint64_t bytes = 0;
  int op = 0;
  for (auto _ : state) {
    lat.Time([&] {
      for (int j = 0; j < batch; ++j) {
        std::string key = prefix + std::to_string((op * batch + j) % distinct);
        if (get) {
          redis.Command({"GET", key});
        } else {
          redis.Command({"SET", key, value});
        }
      }
      if (!redis.Flush()) state.SkipWithError("send failed");
      for (int j = 0; j < batch; ++j) {
        if (!redis.Reply(&reply)) state.SkipWithError("bad reply");
        bytes += get ? reply.size() : value.size();
      }
    });
    ++op;
  }
  state.SetBytesProcessed(static_cast<int64_t>(bytes));
  state.SetItemsProcessed(static_cast<int64_t>(state.iterations()) * batch);
  lat.Report(state);
  redis.Command({"FLUSHALL"});
  redis.Flush();
  redis.Reply(&reply);
}

void Register(const Targets& targets) {
  const KvShape big{32, 8, 256, 128};
  const KvShape small{2, 2, 16, 64};
  auto reg = [](const std::string& name, auto fn, int iterations) {
    benchmark::RegisterBenchmark(name.c_str(), fn)->Iterations(iterations)->UseRealTime()->Unit(
        benchmark::kMillisecond);
  };
  for (const auto& [label, address] : targets.seqkv) {
    const bool durable = label == "seqkv";
    if (!durable) {  // the cost of fsync on big chunks
      reg(label + "/put/32MiB/raw", [=](benchmark::State& s) { SeqkvPutGet(s, address, "raw", big, false, 1); },
          kBigIterations);
    }
    if (durable) {
      for (std::string codec : {"raw", "lossless"}) {
        for (bool get : {false, true}) {
          reg(label + "/" + (get ? "get" : "put") + "/32MiB/" + codec,
              [=](benchmark::State& s) { SeqkvPutGet(s, address, codec, big, get, 1); }, kBigIterations);
        }
        for (bool get : {false, true}) {
          reg(label + "/" + (get ? "get_kv+decode" : "encode+put_kv") + "/32MiB/" + codec,
              [=](benchmark::State& s) { SeqkvKvRoundTrip(s, address, codec, get); }, kBigIterations / 2);
        }
      }
    }
    for (bool get : {false, true}) {
      const std::string op = get ? "get" : "put";
      reg(label + "/" + op + "/16KiB", [=](benchmark::State& s) { SeqkvPutGet(s, address, "raw", small, get, 1); },
          kSmallIterations);
      reg(label + "/" + op + "/16KiB/batch64",
          [=](benchmark::State& s) { SeqkvPutGet(s, address, "raw", small, get, kBatch); }, kBatchIterations);
    }
  }
  if (!targets.redis.empty()) {
    const std::string address = targets.redis;
    for (std::string codec : {"raw", "lossless"}) {
      for (bool get : {false, true}) {
        reg(std::string("redis/") + (get ? "get" : "set") + "/32MiB/" + codec,
            [=](benchmark::State& s) { RedisSetGet(s, address, codec, big, get, 1); }, kBigIterations);
      }
    }
    for (bool get : {false, true}) {
      const std::string op = get ? "get" : "set";
      reg("redis/" + op + "/16KiB", [=](benchmark::State& s) { RedisSetGet(s, address, "raw", small, get, 1); },
          kSmallIterations);
      reg("redis/" + op + "/16KiB/pipeline64",
          [=](benchmark::State& s) { RedisSetGet(s, address, "raw", small, get, kBatch); }, kBatchIterations);
    }
  }
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  Targets targets;
  if (const char* a = std::getenv("SEQKV_BENCH_SERVER")) targets.seqkv["seqkv"] = a;
  if (const char* a = std::getenv("SEQKV_BENCH_SERVER_NOSYNC")) targets.seqkv["seqkv-nosync"] = a;
  if (const char* a = std::getenv("SEQKV_BENCH_REDIS")) targets.redis = a;
  if (targets.seqkv.empty() && targets.redis.empty()) {
    std::fprintf(stderr,
                 "store_bench: set SEQKV_BENCH_SERVER / SEQKV_BENCH_SERVER_NOSYNC / SEQKV_BENCH_REDIS "
                 "(bench/run_store_bench.sh does)\n");
    return 2;
  }
  Register(targets);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
