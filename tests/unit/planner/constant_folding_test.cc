// Plan-time evaluation: folded nodes leave Graph::nodes and their outputs become constants.
#include <gtest/gtest.h>

#include <cmath>
#include <string>
#include <vector>

#include "tests/unit/planner/import_test_util.h"

namespace kfleet::planner {
namespace {

using import_testing::MustImport;
using import_testing::ShapeOf;
using import_testing::ValueNamed;

std::vector<int64_t> Ints(const Graph& g, std::string_view name) {
  const Value& v = ValueNamed(g, name);
  EXPECT_EQ(v.kind, ValueKind::kConstant) << name;
  return v.constant ? v.constant->ints : std::vector<int64_t>{};
}

std::vector<double> Floats(const Graph& g, std::string_view name) {
  const Value& v = ValueNamed(g, name);
  EXPECT_EQ(v.kind, ValueKind::kConstant) << name;
  return v.constant ? v.constant->floats : std::vector<double>{};
}

std::vector<std::string> OpTypes(const Graph& g) {
  std::vector<std::string> ops;
  for (const Node& n : g.nodes) ops.push_back(n.op_type);
  return ops;
}

TEST(FoldTest, ShapeGatherConcatReshapeChainBecomesAConstant) {
  Graph g = MustImport(18, R"(
    g (float[2,3,4] x) => (float[2,12] y) <int64 zero = {0}, int64[1] ax0 = {0}, int64[1] minus1 = {-1}> {
      s = Shape(x)
      b = Gather(s, zero)
      bu = Unsqueeze(b, ax0)
      shp = Concat<axis = 0>(bu, minus1)
      y = Reshape(x, shp)
    })");
  EXPECT_EQ(OpTypes(g), std::vector<std::string>({"Reshape"}));
  EXPECT_EQ(g.folded_nodes, 4);
  EXPECT_EQ(Ints(g, "s"), std::vector<int64_t>({2, 3, 4}));
  EXPECT_EQ(Ints(g, "b"), std::vector<int64_t>({2}));
  EXPECT_EQ(ShapeOf(g, "b"), Shape({}));
  EXPECT_EQ(Ints(g, "shp"), std::vector<int64_t>({2, -1}));
  EXPECT_EQ(ShapeOf(g, "y"), Shape({2, 12}));
  // The links were rebuilt: the reshape now reads a value nobody produces.
  EXPECT_EQ(ValueNamed(g, "shp").producer, -1);
  EXPECT_EQ(ValueNamed(g, "shp").consumers, std::vector<int>({0}));
  EXPECT_EQ(ValueNamed(g, "y").producer, 0);
}

TEST(FoldTest, RangeAndConstantOfShape) {
  Graph g = MustImport(18, R"(
    g (float[3] x) => (float[3] y) <int64 zero = {0}, int64 six = {6}, int64 two = {2}, float half = {0.5},
       float two_f = {2.0}, int64[2] pair = {2, 2}> {
      r = Range(zero, six, two)
      fr = Range(half, two_f, half)
      dims = Shape(x)
      ones = ConstantOfShape<value = float[1] {1.5}>(dims)
      sevens = ConstantOfShape<value = int64[1] {7}>(pair)
      zeros = ConstantOfShape(dims)
      y = Add(x, ones)
    })");
  EXPECT_EQ(Ints(g, "r"), std::vector<int64_t>({0, 2, 4}));
  EXPECT_EQ(Floats(g, "fr"), std::vector<double>({0.5, 1.0, 1.5}));
  EXPECT_EQ(Floats(g, "ones"), std::vector<double>({1.5, 1.5, 1.5}));
  EXPECT_EQ(ValueNamed(g, "sevens").dtype, DType::kI64);
  EXPECT_EQ(Ints(g, "sevens"), std::vector<int64_t>({7, 7, 7, 7}));
  EXPECT_EQ(ShapeOf(g, "sevens"), Shape({2, 2}));
  EXPECT_EQ(ValueNamed(g, "zeros").dtype, DType::kF32);
  EXPECT_EQ(Floats(g, "zeros"), std::vector<double>({0, 0, 0}));
  EXPECT_EQ(OpTypes(g), std::vector<std::string>({"Add"}));
}

TEST(FoldTest, ConstantNodesInEveryForm) {
  Graph g = MustImport(18, R"(
    g (float[2] x) => (float[2] y) {
      t = Constant<value = int64[2] {3, 4}>()
      f = Constant<value_float = 0.5>()
      fs = Constant<value_floats = [1.0, 2.0]>()
      i = Constant<value_int = 7>()
      is = Constant<value_ints = [1, 2, 3]>()
      big = Constant<value = float[10] {1, 2, 3, 4, 5, 6, 7, 8, 9, 10}>()
      y = Mul(x, f)
    })");
  EXPECT_EQ(g.folded_nodes, 6);
  EXPECT_EQ(Ints(g, "t"), std::vector<int64_t>({3, 4}));
  EXPECT_EQ(ShapeOf(g, "f"), Shape({}));
  EXPECT_EQ(Floats(g, "f"), std::vector<double>({0.5}));
  EXPECT_EQ(Floats(g, "fs"), std::vector<double>({1.0, 2.0}));
  EXPECT_EQ(Ints(g, "i"), std::vector<int64_t>({7}));
  EXPECT_EQ(ValueNamed(g, "i").dtype, DType::kI64);
  EXPECT_EQ(Ints(g, "is"), std::vector<int64_t>({1, 2, 3}));
  // A floating tensor of more than 8 elements is a parameter, not a plan-time value.
  const Value& big = ValueNamed(g, "big");
  EXPECT_EQ(big.kind, ValueKind::kWeight);
  ASSERT_NE(big.raw_data, nullptr);
  EXPECT_EQ(big.raw_data->size(), 40u);
  EXPECT_EQ(OpTypes(g), std::vector<std::string>({"Mul"}));
}

TEST(FoldTest, MaskArithmeticOnConstants) {
  Graph g = MustImport(18, R"(
    g (float[2,3] x) => (float[2,3] y) <int64[2] minus_ones = {-1, 3}, int64 ones = {1}, int64[2] four = {2, 2}, int64 two = {2},
       int64 three = {3}, int64[1] minus1 = {-1}, int64[1] big = {9223372036854775807},
       int64[1] zero = {0}, int64[1] small = {-9223372036854775807}, int64[1] last = {-1}> {
      s = Shape(x)
      eq = Equal(s, minus_ones)
      w = Where(eq, ones, s)
      ex = Expand(w, four)
      c = Cast<to = 1>(s)
      sc = Sqrt(c)
      sum = Add(s, ones)
      dif = Sub(s, ones)
      prod = Mul(s, s)
      quo = Div(s, two)
      lt = Less(s, three)
      gt = Greater(s, two)
      both = And(lt, gt)
      either = Or(lt, gt)
      nt = Not(lt)
      sl = Slice(s, minus1, big, zero)
      rev = Slice(s, minus1, small, zero, minus1)
      neg = Neg(s)
      g2 = Gather(s, last)
      cb = Cast<to = 9>(dif)
      y = Identity(x)
    })");
  EXPECT_EQ(Ints(g, "eq"), std::vector<int64_t>({0, 1}));
  EXPECT_EQ(ValueNamed(g, "eq").dtype, DType::kBool);
  EXPECT_EQ(Ints(g, "w"), std::vector<int64_t>({2, 1}));
  EXPECT_EQ(ShapeOf(g, "ex"), Shape({2, 2}));
  EXPECT_EQ(Ints(g, "ex"), std::vector<int64_t>({2, 1, 2, 1}));
  EXPECT_EQ(Floats(g, "c"), std::vector<double>({2.0, 3.0}));
  EXPECT_EQ(Floats(g, "sc"), std::vector<double>({std::sqrt(2.0), std::sqrt(3.0)}));
  EXPECT_EQ(Ints(g, "sum"), std::vector<int64_t>({3, 4}));
  EXPECT_EQ(Ints(g, "dif"), std::vector<int64_t>({1, 2}));
  EXPECT_EQ(Ints(g, "prod"), std::vector<int64_t>({4, 9}));
  EXPECT_EQ(Ints(g, "quo"), std::vector<int64_t>({1, 1}));
  EXPECT_EQ(Ints(g, "lt"), std::vector<int64_t>({1, 0}));
  EXPECT_EQ(Ints(g, "gt"), std::vector<int64_t>({0, 1}));
  EXPECT_EQ(Ints(g, "both"), std::vector<int64_t>({0, 0}));
  EXPECT_EQ(Ints(g, "either"), std::vector<int64_t>({1, 1}));
  EXPECT_EQ(Ints(g, "nt"), std::vector<int64_t>({0, 1}));
  EXPECT_EQ(Ints(g, "sl"), std::vector<int64_t>({3}));
  EXPECT_EQ(Ints(g, "rev"), std::vector<int64_t>({3, 2}));
  EXPECT_EQ(Ints(g, "neg"), std::vector<int64_t>({-2, -3}));
  EXPECT_EQ(Ints(g, "g2"), std::vector<int64_t>({3}));
  EXPECT_EQ(Ints(g, "cb"), std::vector<int64_t>({1, 1}));
  EXPECT_EQ(OpTypes(g), std::vector<std::string>({"Identity"}));
}

TEST(FoldTest, ConcatAndGatherAlongInnerAxes) {
  Graph g = MustImport(18, R"(
    g (float[1] x) => (float[1] y) <int64[2,2] a = {1, 2, 3, 4}, int64[2,1] b = {5, 6}, int64[1] idx = {2},
       int64[1] one = {1}> {
      cat = Concat<axis = 1>(a, b)
      col = Gather<axis = 1>(cat, idx)
      sq = Squeeze(col, one)
      y = Identity(x)
    })");
  EXPECT_EQ(Ints(g, "cat"), std::vector<int64_t>({1, 2, 5, 3, 4, 6}));
  EXPECT_EQ(Ints(g, "col"), std::vector<int64_t>({5, 6}));
  EXPECT_EQ(ShapeOf(g, "sq"), Shape({2}));
}

TEST(FoldTest, UndefinedResultsAndLargeOutputsStayRuntimeNodes) {
  ImportOptions small;
  small.max_fold_elements = 16;
  Graph g = MustImport(18, R"(
    g (float[1] x) => (float[1] y) <int64 six = {6}, int64 zero = {0}, int64[2] pair = {1, 2}, int64 five = {5},
       int64[2] dims = {8, 8}, int64[1] four = {4}> {
      bad = Div(six, zero)
      out_of_range = Gather(pair, five)
      wide = ConstantOfShape<value = float[1] {1.0}>(dims)
      narrow = ConstantOfShape<value = float[1] {1.0}>(four)
      y = Identity(x)
    })",
                       small);
  EXPECT_EQ(OpTypes(g), std::vector<std::string>({"Div", "Gather", "ConstantOfShape", "Identity"}));
  EXPECT_EQ(ValueNamed(g, "wide").kind, ValueKind::kActivation);
  EXPECT_EQ(ShapeOf(g, "wide"), Shape({8, 8}));
  EXPECT_EQ(ValueNamed(g, "narrow").kind, ValueKind::kConstant);
  EXPECT_EQ(g.folded_nodes, 1);
}

TEST(FoldTest, RuntimeValuesAreNotFolded) {
  Graph g = MustImport(18, R"(
    g (int64[2] a) => (int64[2] y) <int64 one = {1}> {
      y = Add(a, one)
    })");
  EXPECT_EQ(OpTypes(g), std::vector<std::string>({"Add"}));
  EXPECT_EQ(ValueNamed(g, "y").kind, ValueKind::kActivation);
  EXPECT_EQ(g.folded_nodes, 0);
}

}  // namespace
}  // namespace kfleet::planner
