// EqualCtas (gpu/src/gpu_util.h): a dense launch's item_ctas, the CTA count
// every item shares (the kernels then take blockIdx.x / item_ctas as a CTA's
// item, without a search), or 0 wherever that division would pick a wrong
// item. No GPU needed.
#include "../../gpu/src/gpu_util.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <initializer_list>

namespace seqkv::gpu::internal {
namespace {

uint32_t ItemCtas(std::initializer_list<uint32_t> counts) {
  EqualCtas equal;
  for (uint32_t n : counts) equal.Add(n);
  return equal.Get();
}

TEST(EqualCtasTest, TheSharedCountWhenEveryItemHasIt) {
  EXPECT_EQ(ItemCtas({64}), 64u);
  EXPECT_EQ(ItemCtas({64, 64, 64}), 64u);
}

TEST(EqualCtasTest, ZeroWhenCountsDifferOrThereIsNone) {
  EXPECT_EQ(ItemCtas({}), 0u);
  EXPECT_EQ(ItemCtas({64, 32}), 0u);
  EXPECT_EQ(ItemCtas({64, 64, 16, 64}), 0u);  // a short item in the middle
  EXPECT_EQ(ItemCtas({0, 64, 64}), 0u);       // an empty first item: no CTA of its own
  EXPECT_EQ(ItemCtas({0, 0}), 0u);            // no CTAs at all
}

TEST(EqualCtasTest, TheDivisionFindsEachCtasItem) {
  // The kernels' rule, item = cta / item_ctas, against the prefix sums the
  // search uses (first_cta), for a launch of equal items.
  const uint32_t counts[] = {16, 16, 16, 16, 16};
  EqualCtas equal;
  uint32_t first[5], total = 0;
  for (uint32_t i = 0; i < 5; ++i) {
    first[i] = total;
    total += counts[i];
    equal.Add(counts[i]);
  }
  const uint32_t each = equal.Get();
  ASSERT_EQ(each, 16u);
  for (uint32_t cta = 0; cta < total; ++cta) {
    uint32_t item = 0;
    while (item + 1 < 5 && first[item + 1] <= cta) ++item;
    EXPECT_EQ(cta / each, item) << "cta " << cta;
  }
}

}  // namespace
}  // namespace seqkv::gpu::internal
