// Backend memory for the GPU API tests (tests/gpu/*_test.cc), freed at scope
// exit: cudaMalloc'ed on kCuda, host memory on kCpu (seqkv/gpu/backend.h).
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <random>
#include <utility>
#include <vector>

#include "seqkv/codec/chunk.h"
#include "seqkv/gpu/backend.h"

namespace seqkv::test {

class BackendBuffer {
 public:
  BackendBuffer(gpu::Backend backend, uint64_t bytes) : backend_(backend), bytes_(bytes) {
    auto p = gpu::BackendAllocate(backend, bytes);
    EXPECT_TRUE(p.ok()) << p.status().ToString();
    if (p.ok()) ptr_ = static_cast<uint8_t*>(*p);
  }
  // A copy of `host`.
  BackendBuffer(gpu::Backend backend, const std::vector<uint8_t>& host) : BackendBuffer(backend, host.size()) {
    Upload(host);
  }
  // On the backend of a GPU API object (anything with backend()).
  template <typename Api, typename = decltype(std::declval<const Api&>().backend())>
  BackendBuffer(const Api& api, uint64_t bytes) : BackendBuffer(api.backend(), bytes) {}
  ~BackendBuffer() { gpu::BackendFree(backend_, ptr_); }
  BackendBuffer(const BackendBuffer&) = delete;
  BackendBuffer& operator=(const BackendBuffer&) = delete;

  uint8_t* get() const { return ptr_; }
  uint64_t size() const { return bytes_; }
  void Upload(const std::vector<uint8_t>& host) const {
    ASSERT_TRUE(gpu::BackendCopyIn(backend_, ptr_, host.data(), std::min<uint64_t>(host.size(), bytes_)).ok());
  }
  std::vector<uint8_t> Download(uint64_t bytes = UINT64_MAX) const {
    std::vector<uint8_t> host(std::min(bytes, bytes_));
    EXPECT_TRUE(gpu::BackendCopyOut(backend_, host.data(), ptr_, host.size()).ok());
    return host;
  }

 private:
  gpu::Backend backend_;
  uint64_t bytes_;
  uint8_t* ptr_ = nullptr;
};

// What one layer's vLLM-paged cache ([num_blocks, 2, block_size, kv_heads,
// head_dim] bf16) must hold after decoding a chunk whose bf16 K and V are
// `k` and `v` ([layers, kv_heads, tokens, head_dim]) at sequence position
// `offset` through `table`: the chunk's rows where they land, `fill` elsewhere.
inline std::vector<uint8_t> PagedLayerImage(const KvShape& s, uint32_t layer, const std::vector<uint8_t>& k,
                                            const std::vector<uint8_t>& v, uint64_t offset,
                                            const std::vector<int32_t>& table, uint32_t block_size,
                                            uint32_t num_blocks, uint8_t fill) {
  const uint64_t row = uint64_t{s.head_dim} * 2;
  std::vector<uint8_t> image(uint64_t{num_blocks} * 2 * block_size * s.kv_heads * row, fill);
  for (uint64_t t = 0; t < s.tokens; ++t) {
    const uint64_t pos = offset + t, blk = static_cast<uint64_t>(table[pos / block_size]);
    for (int kv = 0; kv < 2; ++kv) {
      const std::vector<uint8_t>& ref = kv ? v : k;
      for (uint32_t h = 0; h < s.kv_heads; ++h) {
        std::memcpy(&image[(((blk * 2 + kv) * block_size + pos % block_size) * s.kv_heads + h) * row],
                    &ref[((uint64_t{layer} * s.kv_heads + h) * s.tokens + t) * row], row);
      }
    }
  }
  return image;
}

// A chunk's K and V in vLLM paged caches in backend memory, as an encoder's
// source: one cache per layer ([num_blocks, 2, block_size, kv_heads,
// head_dim] bf16, `fill` where the chunk is not), the chunk at sequence
// position `offset`, its blocks drawn at random (`seed`) from [0, num_blocks).
struct PagedSource {
  std::vector<std::unique_ptr<BackendBuffer>> caches;
  std::unique_ptr<BackendBuffer> pointers, table;
  std::vector<int32_t> host_table;

  const void* const* layer_caches() const { return reinterpret_cast<const void* const*>(pointers->get()); }
  const int32_t* block_table() const { return reinterpret_cast<const int32_t*>(table->get()); }
  // Points entry `i` at `block` (e.g. -1, to test OUT_OF_RANGE).
  void SetEntry(size_t i, int32_t block) {
    host_table[i] = block;
    std::vector<uint8_t> bytes(host_table.size() * 4);
    std::memcpy(bytes.data(), host_table.data(), bytes.size());
    table->Upload(bytes);
  }
};

inline uint32_t BlocksFor(uint64_t offset, uint64_t tokens, uint32_t block_size) {
  return static_cast<uint32_t>((offset + tokens + block_size - 1) / block_size);
}

inline PagedSource MakePagedSource(gpu::Backend backend, const Chunk& c, uint64_t offset, uint32_t block_size,
                                   uint32_t num_blocks, uint64_t seed, uint8_t fill = 0x3F) {
  PagedSource out;
  std::vector<int32_t> ids(num_blocks);
  for (uint32_t b = 0; b < num_blocks; ++b) ids[b] = static_cast<int32_t>(b);
  std::mt19937_64 rng(seed);
  std::shuffle(ids.begin(), ids.end(), rng);
  out.host_table.assign(ids.begin(), ids.begin() + BlocksFor(offset, c.shape.tokens, block_size));
  std::vector<void*> ptrs;
  for (uint32_t l = 0; l < c.shape.layers; ++l) {
    out.caches.push_back(std::make_unique<BackendBuffer>(
        backend, PagedLayerImage(c.shape, l, c.k, c.v, offset, out.host_table, block_size, num_blocks, fill)));
    ptrs.push_back(out.caches.back()->get());
  }
  std::vector<uint8_t> ptr_bytes(ptrs.size() * sizeof(void*));
  std::memcpy(ptr_bytes.data(), ptrs.data(), ptr_bytes.size());
  out.pointers = std::make_unique<BackendBuffer>(backend, ptr_bytes);
  std::vector<uint8_t> table_bytes(out.host_table.size() * 4);
  std::memcpy(table_bytes.data(), out.host_table.data(), table_bytes.size());
  out.table = std::make_unique<BackendBuffer>(backend, table_bytes);
  return out;
}

}  // namespace seqkv::test
