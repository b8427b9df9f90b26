// Pins the key scheme of docs/keys.md: if one of these vectors changes, every
// stored chunk of every deployment becomes unreachable. Never "fix" a vector;
// version the scheme instead.
#include "seqkv/proto/keys.h"

#include <gtest/gtest.h>

#include <numeric>
#include <set>
#include <string>
#include <vector>

namespace seqkv {
namespace {

std::string Hex(const std::vector<uint8_t>& bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  for (uint8_t b : bytes) {
    out.push_back(kDigits[b >> 4]);
    out.push_back(kDigits[b & 0xF]);
  }
  return out;
}

NamespaceFields VectorFields() {
  NamespaceFields f;
  f.model_name = "tinyllama-12m";
  f.model_config_hash = "00112233445566778899aabbccddeeff";
  return f;  // every other field at its default
}

TEST(Key128Test, HexAndBytesRoundTrip) {
  Key128 key{0x0123456789abcdefull, 0xfedcba9876543210ull};
  EXPECT_EQ(key.ToHex(), "0123456789abcdeffedcba9876543210");
  Result<Key128> parsed = Key128::FromHex("0123456789ABCDEFfedcba9876543210");
  ASSERT_TRUE(parsed.ok());
  EXPECT_EQ(*parsed, key);
  uint8_t bytes[16];
  key.ToBytes(bytes);
  EXPECT_EQ(bytes[0], 0x01);
  EXPECT_EQ(bytes[7], 0xef);
  EXPECT_EQ(bytes[8], 0xfe);
  EXPECT_EQ(bytes[15], 0x10);
  EXPECT_EQ(Key128::FromBytes(bytes), key);
}

TEST(Key128Test, FromHexRejectsBadInput) {
  EXPECT_EQ(Key128::FromHex("abc").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Key128::FromHex(std::string(31, '0') + "g").status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(Key128::FromHex(std::string(33, '0')).status().code(), StatusCode::kInvalidArgument);
}

TEST(KeysVectorTest, NamespaceEncoding) {
  EXPECT_EQ(Hex(EncodeNamespaceFields(VectorFields())),
            "120000007365716b762e6e616d6573706163652e76310d00000074696e796c6c616d612d31326d2000000030"
            "303131323233333434353536363737383839396161626263636464656566660400000062663136040000006c"
            "687464000000000100000000010000080000006c6f73736c65737300000000");
}

TEST(KeysVectorTest, NamespaceIds) {
  EXPECT_EQ(NamespaceId(VectorFields()).ToHex(), "dd196387e0e104bcf165c83c0c76c9a7");
  NamespaceFields tenant = VectorFields();
  tenant.tenant_salt = "tenant-a";
  EXPECT_EQ(NamespaceId(tenant).ToHex(), "f872f11afa58601d1878b6b5a7b1d7e3");
  NamespaceFields minimal;
  minimal.model_name = "m";
  EXPECT_EQ(NamespaceId(minimal).ToHex(), "3e1d0162243d390812f682b60a2d7d30");
}

TEST(KeysVectorTest, ChunkKeys) {
  EXPECT_EQ(NextChunkKey(Key128{}, {}).ToHex(), "e5189a9599e3f86205ea23ef06e28b2d");
  Key128 ns = NamespaceId(VectorFields());
  std::vector<int32_t> four = {1, 2, 3, 4};
  EXPECT_EQ(NextChunkKey(ns, four).ToHex(), "320d53de9318dab00c4273baa430d3b9");
  std::vector<int32_t> extremes = {-1, 2147483647};
  EXPECT_EQ(NextChunkKey(Key128{0x0123456789abcdefull, 0xfedcba9876543210ull}, extremes).ToHex(),
            "a4e243097aecd579fa05c106aeef2543");

  std::vector<int32_t> ten(10);
  std::iota(ten.begin(), ten.end(), 0);
  std::vector<Key128> keys = ChunkKeys(ns, ten, 4);  // tokens 8, 9 are a partial chunk: no key
  ASSERT_EQ(keys.size(), 2u);
  EXPECT_EQ(keys[0].ToHex(), "afe89b043659f204de763ef0d65598d7");
  EXPECT_EQ(keys[1].ToHex(), "c722d25dfbd113d5cce4dd9174c5895e");
  EXPECT_EQ(keys[1], NextChunkKey(keys[0], std::span<const int32_t>(ten).subspan(4, 4)));
}

TEST(KeysVectorTest, ModelFingerprint) {
  std::string json = "{}";
  EXPECT_EQ(ModelFingerprint({reinterpret_cast<const uint8_t*>(json.data()), json.size()}),
            "dc7048f8f8747f561349cde127705c16");
}

TEST(KeysTest, SharedPrefixesShareKeys) {
  Key128 ns = NamespaceId(VectorFields());
  std::vector<int32_t> a(64), b(64);
  std::iota(a.begin(), a.end(), 100);
  b = a;
  b[40] = 7;  // diverge in the third chunk of 16
  std::vector<Key128> ka = ChunkKeys(ns, a, 16), kb = ChunkKeys(ns, b, 16);
  ASSERT_EQ(ka.size(), 4u);
  EXPECT_EQ(ka[0], kb[0]);
  EXPECT_EQ(ka[1], kb[1]);
  EXPECT_NE(ka[2], kb[2]);
  EXPECT_NE(ka[3], kb[3]);  // the chain carries the difference forward
}

TEST(KeysTest, EveryFieldChangesTheId) {
  std::set<Key128> ids;
  NamespaceFields base = VectorFields();
  ids.insert(NamespaceId(base));
  auto add = [&](auto mutate) {
    NamespaceFields f = base;
    mutate(f);
    EXPECT_TRUE(ids.insert(NamespaceId(f)).second);
  };
  add([](NamespaceFields& f) { f.model_name = "other"; });
  add([](NamespaceFields& f) { f.model_config_hash = "ff"; });
  add([](NamespaceFields& f) { f.kv_dtype = "fp16"; });
  add([](NamespaceFields& f) { f.kv_layout = "lthd"; });
  add([](NamespaceFields& f) { f.tp_size = 2; });
  add([](NamespaceFields& f) { f.tp_size = 2; f.tp_rank = 1; });
  add([](NamespaceFields& f) { f.chunk_tokens = 128; });
  add([](NamespaceFields& f) { f.codec_spec = "raw"; });
  add([](NamespaceFields& f) { f.tenant_salt = "t"; });
  // Length prefixes keep field boundaries: moving a byte between fields changes the id.
  add([](NamespaceFields& f) { f.model_name = "tinyllama-12m0"; f.model_config_hash = "0112233445566778899aabbccddeeff"; });
}

TEST(KeysTest, ValidateNamespace) {
  EXPECT_TRUE(ValidateNamespace(VectorFields()).ok());
  auto bad = [](auto mutate) {
    NamespaceFields f = VectorFields();
    mutate(f);
    return ValidateNamespace(f).code();
  };
  EXPECT_EQ(bad([](NamespaceFields& f) { f.model_name.clear(); }), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](NamespaceFields& f) { f.kv_dtype = "int8"; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](NamespaceFields& f) { f.kv_layout = "x"; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](NamespaceFields& f) { f.tp_size = 0; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](NamespaceFields& f) { f.tp_rank = 1; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](NamespaceFields& f) { f.chunk_tokens = 0; }), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](NamespaceFields& f) { f.codec_spec.clear(); }), StatusCode::kInvalidArgument);
  EXPECT_EQ(bad([](NamespaceFields& f) { f.model_name = std::string(2000, 'x'); }),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace seqkv
