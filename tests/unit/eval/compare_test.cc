#include "eval/compare.h"

#include <gtest/gtest.h>

#include <cmath>
#include <limits>

namespace kfleet::eval {
namespace {

using runtime::DType;
using runtime::Tensor;

Tensor Make(DType dtype, std::vector<double> values) {
  Tensor t(dtype, {static_cast<int64_t>(values.size())});
  for (size_t i = 0; i < values.size(); ++i) t.SetDouble(static_cast<int64_t>(i), values[i]);
  return t;
}

TEST(CompareTest, WithinRelativeToleranceMatches) {
  Tensor ref = Make(DType::kF64, {1.0, -2.0, 3.0, 1000.0});
  Tensor got = Make(DType::kF32, {1.00001, -2.0, 3.0, 1000.05});
  CompareResult c = CompareOutput("out0", got, ref, {1e-4, 1.0});
  EXPECT_TRUE(c.passed) << c.message;
  EXPECT_EQ(c.mismatched, 0);
  EXPECT_GT(c.max_abs_error, 0.0);
}

TEST(CompareTest, OutsideToleranceNamesTheWorstElement) {
  Tensor ref = Make(DType::kF64, {1.0, 2.0, 3.0, 4.0});
  Tensor got = Make(DType::kF32, {1.0, 2.0, 3.5, 4.0});
  CompareResult c = CompareOutput("out0", got, ref, {1e-4, 1.0});
  EXPECT_FALSE(c.passed);
  EXPECT_EQ(c.mismatched, 1);
  EXPECT_EQ(c.worst_index, 2);
  EXPECT_NE(c.message.find("out0[2]"), std::string::npos) << c.message;
}

TEST(CompareTest, NearZeroElementsAreJudgedByTheTensorsMagnitude) {
  // 1e-9 against 0 is a huge relative error but nothing next to values of order 1.
  Tensor ref = Make(DType::kF64, {0.0, 1.0, -1.0, 1.0});
  Tensor got = Make(DType::kF32, {1e-9, 1.0, -1.0, 1.0});
  EXPECT_TRUE(CompareOutput("out0", got, ref, {1e-4, 1.0}).passed);
}

TEST(CompareTest, MatchedRatioAllowsAFewOutliersInHalfPrecision) {
  std::vector<double> values(2000, 1.0);
  Tensor ref = Make(DType::kF64, values);
  values[7] = 1.5;
  Tensor got = Make(DType::kF16, values);
  EXPECT_TRUE(CompareOutput("out0", got, ref, {1e-2, 0.999}).passed);
  values[8] = 1.5;
  values[9] = 1.5;
  Tensor worse = Make(DType::kF16, values);
  EXPECT_FALSE(CompareOutput("out0", worse, ref, {1e-2, 0.999}).passed);
}

TEST(CompareTest, PoisonLeftInPlaceIsUnwrittenWhateverTheRatio) {
  Tensor ref = Make(DType::kF64, std::vector<double>(1000, 2.0));
  Tensor got(DType::kF16, {1000});
  Poison(got);
  for (int64_t i = 0; i < 999; ++i) got.SetDouble(i, 2.0);
  EXPECT_TRUE(IsPoison(got, 999));
  EXPECT_FALSE(IsPoison(got, 0));
  CompareResult c = CompareOutput("out0", got, ref, {1e-2, 0.99});
  EXPECT_FALSE(c.passed);
  EXPECT_EQ(c.unwritten, 1);
  EXPECT_NE(c.message.find("out0[999] never written"), std::string::npos) << c.message;
}

TEST(CompareTest, PoisonIsANanNoArithmeticProduces) {
  for (DType dtype : {DType::kF32, DType::kF64, DType::kF16, DType::kBF16}) {
    Tensor t(dtype, {4});
    Poison(t);
    EXPECT_TRUE(std::isnan(t.GetDouble(0)));
    // A kernel that computes NaN (0/0) writes a quiet NaN, which is not the poison.
    t.SetDouble(1, std::numeric_limits<double>::quiet_NaN());
    EXPECT_FALSE(IsPoison(t, 1)) << planner::DTypeName(dtype);
    EXPECT_TRUE(IsPoison(t, 2));
  }
}

TEST(CompareTest, UnexpectedNanFailsAndReferenceNanMustBeMatched) {
  const double nan = std::numeric_limits<double>::quiet_NaN();
  Tensor ref = Make(DType::kF64, {1.0, nan, 3.0});
  CompareResult extra = CompareOutput("out0", Make(DType::kF32, {nan, nan, 3.0}), ref, {1e-4, 0});
  EXPECT_FALSE(extra.passed);
  EXPECT_EQ(extra.unexpected_nan, 1);
  CompareResult missing = CompareOutput("out0", Make(DType::kF32, {1.0, 2.0, 3.0}), ref, {1e-4, 0});
  EXPECT_FALSE(missing.passed);
  EXPECT_EQ(missing.wrong_special, 1);
  EXPECT_TRUE(CompareOutput("out0", Make(DType::kF32, {1.0, nan, 3.0}), ref, {1e-4, 1}).passed);
}

TEST(CompareTest, ReferenceIsRoundedToTheOutputDtypeBeforeComparing) {
  const double inf = std::numeric_limits<double>::infinity();
  // 70000 overflows f16: the kernel's Inf is what the reference says in f16.
  Tensor ref = Make(DType::kF64, {70000.0, 1.0});
  EXPECT_TRUE(CompareOutput("out0", Make(DType::kF16, {inf, 1.0}), ref, {1e-2, 1}).passed);
  EXPECT_FALSE(CompareOutput("out0", Make(DType::kF16, {-inf, 1.0}), ref, {1e-2, 1}).passed);
  // Inf where the reference is an ordinary number is wrong.
  EXPECT_FALSE(CompareOutput("out0", Make(DType::kF32, {inf, 1.0}), ref, {1e-4, 1}).passed);
}

TEST(CompareTest, IntegersMustBeExact) {
  Tensor ref = Make(DType::kI64, {1, 2, 3});
  EXPECT_TRUE(CompareOutput("out0", Make(DType::kI64, {1, 2, 3}), ref, {0, 1}).passed);
  CompareResult c = CompareOutput("out0", Make(DType::kI64, {1, 2, 4}), ref, {0, 1});
  EXPECT_FALSE(c.passed);
  EXPECT_NE(c.message.find("is 4, expected 3"), std::string::npos) << c.message;
}

TEST(CompareTest, ShapeMismatchFails) {
  Tensor ref(DType::kF64, {2, 3});
  Tensor got(DType::kF32, {3, 2});
  CompareResult c = CompareOutput("out0", got, ref, {1e-4, 1});
  EXPECT_FALSE(c.passed);
  EXPECT_NE(c.message.find("[3,2]"), std::string::npos) << c.message;
}

TEST(CompareTest, ElementNamesUseCoordinates) {
  EXPECT_EQ(ElementName("out0", {2, 3, 4}, 23), "out0[1,2,3]");
  EXPECT_EQ(ElementName("out0", {}, 0), "out0[]");
}

TEST(CompareTest, ToleranceTableHasTheDocumentedDefaults) {
  ToleranceTable t;
  EXPECT_DOUBLE_EQ(t.For(DType::kF32).rtol, 1e-4);
  EXPECT_DOUBLE_EQ(t.For(DType::kF16).rtol, 1e-2);
  EXPECT_DOUBLE_EQ(t.For(DType::kBF16).rtol, 2e-2);
  EXPECT_DOUBLE_EQ(t.For(DType::kI64).rtol, 0.0);
}

}  // namespace
}  // namespace kfleet::eval
