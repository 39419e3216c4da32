// Shape and dtype rules, one small ONNX text graph per op family, with value_info left out so
// every shape below comes from kfleet's own inference.
#include <gtest/gtest.h>

#include <string>

#include "planner/import_internal.h"
#include "tests/unit/planner/import_test_util.h"

namespace kfleet::planner {
namespace {

using import_testing::ImportError;
using import_testing::MustImport;
using import_testing::ShapeOf;
using import_testing::ValueNamed;

TEST(ShapeInferenceTest, BroadcastingFollowsNumpy) {
  EXPECT_EQ(import_internal::BroadcastShapes({2, 1, 4}, {3, 1}), Shape({2, 3, 4}));
  EXPECT_EQ(import_internal::BroadcastShapes({}, {5}), Shape({5}));
  EXPECT_EQ(import_internal::BroadcastShapes({0, 1}, {1, 3}), Shape({0, 3}));
  EXPECT_EQ(import_internal::BroadcastShapes({2, 3}, {3, 2}), std::nullopt);
}

TEST(ShapeInferenceTest, ElementwiseOpsBroadcastAndKeepOrSetDtype) {
  Graph g = MustImport(18, R"(
    g (float[2,1,4] a, float[3,1] b, int64[4] i, bool[3,4] m) => (float[2,3,4] w) <float lo = {0.0}, float hi = {6.0}> {
      s = Add(a, b)
      p = Pow(s, b)
      e = Equal(i, i)
      l = LessOrEqual(a, b)
      both = And(m, e)
      w = Where(both, s, a)
      mx = Max(a, b, i2)
      i2 = Cast<to = 1>(i)
      n = IsNaN(s)
      notm = Not(m)
      r = Relu(s)
      gl = Gelu<approximate = "tanh">(r)
      hs = HardSwish(gl)
      c = Clip(hs, lo, hi)
      d, mask = Dropout(c)
    })");
  EXPECT_EQ(ShapeOf(g, "s"), Shape({2, 3, 4}));
  EXPECT_EQ(ShapeOf(g, "p"), Shape({2, 3, 4}));
  EXPECT_EQ(ShapeOf(g, "e"), Shape({4}));
  EXPECT_EQ(ValueNamed(g, "e").dtype, DType::kBool);
  EXPECT_EQ(ValueNamed(g, "l").dtype, DType::kBool);
  EXPECT_EQ(ShapeOf(g, "both"), Shape({3, 4}));
  EXPECT_EQ(ShapeOf(g, "w"), Shape({2, 3, 4}));
  EXPECT_EQ(ValueNamed(g, "w").dtype, DType::kF32);
  EXPECT_EQ(ShapeOf(g, "mx"), Shape({2, 3, 4}));
  EXPECT_EQ(ValueNamed(g, "i2").dtype, DType::kF32);
  EXPECT_EQ(ValueNamed(g, "n").dtype, DType::kBool);
  EXPECT_EQ(ShapeOf(g, "notm"), Shape({3, 4}));
  EXPECT_EQ(ShapeOf(g, "c"), Shape({2, 3, 4}));
  EXPECT_EQ(ShapeOf(g, "d"), Shape({2, 3, 4}));
  EXPECT_EQ(ValueNamed(g, "mask").dtype, DType::kBool);
}

TEST(ShapeInferenceTest, ShapesThatDoNotBroadcastNameTheNode) {
  EXPECT_EQ(ImportError(18, R"(
    g (float[2,3] a, float[3,2] b) => (float[2,3] y) { y = Add(a, b) })"),
            "onnx text: node 'Add_0' (Add): shapes [2,3] and [3,2] do not broadcast");
}

TEST(ShapeInferenceTest, MatMulHandlesVectorsAndBatchBroadcast) {
  Graph g = MustImport(18, R"(
    g (float[2,3,4] a, float[4,5] b, float[4] v, float[2,1,3,4] c, float[5,4,6] d)
      => (float[2,3,5] y) {
      y = MatMul(a, b)
      vm = MatMul(v, b)
      mv = MatMul(a, v)
      bb = MatMul(c, d)
    })");
  EXPECT_EQ(ShapeOf(g, "y"), Shape({2, 3, 5}));
  EXPECT_EQ(ShapeOf(g, "vm"), Shape({5}));
  EXPECT_EQ(ShapeOf(g, "mv"), Shape({2, 3}));
  EXPECT_EQ(ShapeOf(g, "bb"), Shape({2, 5, 3, 6}));
  EXPECT_EQ(ImportError(18, R"(
    g (float[2,3] a, float[4,5] b) => (float[2,5] y) { y = MatMul(a, b) })"),
            "onnx text: node 'MatMul_0' (MatMul): inner dimensions differ: [2,3] x [4,5]");
}

TEST(ShapeInferenceTest, GemmTransposesAndChecksTheBias) {
  Graph g = MustImport(13, R"(
    g (float[4,8] a, float[16,4] b, float[16] c) => (float[8,16] y) {
      y = Gemm<transA = 1, transB = 1>(a, b, c)
    })");
  EXPECT_EQ(ShapeOf(g, "y"), Shape({8, 16}));
  EXPECT_EQ(ImportError(13, R"(
    g (float[768] a, float[768,4] b) => (float[1,4] y) { y = Gemm(a, b) })"),
            "onnx text: node 'Gemm_0' (Gemm): needs rank 2 inputs, got shape [768]");
  EXPECT_NE(ImportError(13, R"(
    g (float[2,3] a, float[3,4] b, float[3] c) => (float[2,4] y) { y = Gemm(a, b, c) })"),
            "");
}

TEST(ShapeInferenceTest, ConvPadsStridesDilationsGroupsAndAutoPad) {
  Graph g = MustImport(18, R"(
    g (float[8,3,224,224] x, float[64,3,7,7] w, float[64] b, float[64,1,3,3] dw)
      => (float[8,64,112,112] y) {
      y = Conv<pads = [3,3,3,3], strides = [2,2]>(x, w, b)
      d = Conv<dilations = [2,2]>(x, w)
      dep = Conv<group = 64, pads = [1,1,1,1]>(y, dw)
      same = Conv<auto_pad = "SAME_UPPER", strides = [2,2]>(x, w)
      valid = Conv<auto_pad = "VALID", strides = [3,3]>(x, w)
    })");
  EXPECT_EQ(ShapeOf(g, "y"), Shape({8, 64, 112, 112}));
  EXPECT_EQ(ShapeOf(g, "d"), Shape({8, 64, 212, 212}));
  EXPECT_EQ(ShapeOf(g, "dep"), Shape({8, 64, 112, 112}));
  EXPECT_EQ(ShapeOf(g, "same"), Shape({8, 64, 112, 112}));
  EXPECT_EQ(ShapeOf(g, "valid"), Shape({8, 64, 73, 73}));
  EXPECT_NE(ImportError(18, R"(
    g (float[1,4,8,8] x, float[2,3,3,3] w) => (float[1,2,6,6] y) { y = Conv(x, w) })"),
            "");
}

TEST(ShapeInferenceTest, ConvTransposeOutputPaddingAndOutputShape) {
  Graph g = MustImport(17, R"(
    g (float[1,16,10,10] x, float[16,8,3,3] w, float[16,4,3,3] half) => (float[1,8,21,21] y) {
      y = ConvTranspose<strides = [2,2], output_padding = [1,1], pads = [1,1,0,0]>(x, w)
      s = ConvTranspose<strides = [2,2], output_shape = [20,20]>(x, w)
      gr = ConvTranspose<group = 2>(x, half)
    })");
  // 2*(10-1) + 1 + 3 - 1 - 0
  EXPECT_EQ(ShapeOf(g, "y"), Shape({1, 8, 21, 21}));
  EXPECT_EQ(ShapeOf(g, "s"), Shape({1, 8, 20, 20}));
  EXPECT_EQ(ShapeOf(g, "gr"), Shape({1, 8, 12, 12}));
}

TEST(ShapeInferenceTest, PoolsWithCeilModeAndGlobalPool) {
  Graph g = MustImport(18, R"(
    g (float[8,64,112,112] x) => (float[8,64,56,56] y) {
      y = MaxPool<kernel_shape = [3,3], pads = [1,1,1,1], strides = [2,2]>(x)
      c = MaxPool<kernel_shape = [3,3], strides = [2,2], ceil_mode = 1>(x)
      f = MaxPool<kernel_shape = [3,3], strides = [2,2]>(x)
      a, idx = MaxPool<kernel_shape = [2,2], strides = [2,2]>(x)
      avg = AveragePool<kernel_shape = [2,2], strides = [2,2], ceil_mode = 1>(odd)
      odd = MaxPool<kernel_shape = [1,1], pads = [0,0,1,1]>(x)
      gap = GlobalAveragePool(x)
    })");
  EXPECT_EQ(ShapeOf(g, "y"), Shape({8, 64, 56, 56}));
  EXPECT_EQ(ShapeOf(g, "c"), Shape({8, 64, 56, 56}));
  EXPECT_EQ(ShapeOf(g, "f"), Shape({8, 64, 55, 55}));
  EXPECT_EQ(ValueNamed(g, "idx").dtype, DType::kI64);
  EXPECT_EQ(ShapeOf(g, "odd"), Shape({8, 64, 113, 113}));
  EXPECT_EQ(ShapeOf(g, "avg"), Shape({8, 64, 57, 57}));
  EXPECT_EQ(ShapeOf(g, "gap"), Shape({8, 64, 1, 1}));
}

TEST(ShapeInferenceTest, ReduceAxesMovedFromAttributeToInput) {
  // ReduceMean takes axes as an attribute up to opset 17, as an input from 18.
  Graph old_form = MustImport(17, R"(
    g (float[8,1280,7,7] x) => (float[8,1280,1,1] y) {
      y = ReduceMean<axes = [-1,-2], keepdims = 1>(x)
      k = ReduceMax<axes = [1], keepdims = 0>(x)
      all = ReduceMean<keepdims = 0>(x)
    })");
  EXPECT_EQ(ShapeOf(old_form, "y"), Shape({8, 1280, 1, 1}));
  EXPECT_EQ(ShapeOf(old_form, "k"), Shape({8, 7, 7}));
  EXPECT_EQ(ShapeOf(old_form, "all"), Shape({}));
  Graph new_form = MustImport(18, R"(
    g (float[8,2048,7,7] x) => (float[8,2048,1,1] y) <int64[2] axes = {-1, -2}, int64[0] empty = {}> {
      y = ReduceMean<keepdims = 1>(x, axes)
      s = ReduceSum<keepdims = 0>(x, axes)
      noop = ReduceMax<noop_with_empty_axes = 1>(x)
      none = ReduceMax<noop_with_empty_axes = 1>(x, empty)
    })");
  EXPECT_EQ(ShapeOf(new_form, "y"), Shape({8, 2048, 1, 1}));
  EXPECT_EQ(ShapeOf(new_form, "s"), Shape({8, 2048}));
  EXPECT_EQ(ShapeOf(new_form, "noop"), Shape({8, 2048, 7, 7}));
  EXPECT_EQ(ShapeOf(new_form, "none"), Shape({8, 2048, 7, 7}));
  // ReduceSum moved in opset 13.
  Graph sum13 = MustImport(13, R"(
    g (float[2,3,4] x) => (float[2,1,4] y) <int64[1] axes = {1}> { y = ReduceSum(x, axes) })");
  EXPECT_EQ(ShapeOf(sum13, "y"), Shape({2, 1, 4}));
  EXPECT_NE(ImportError(18, R"(
    g (float[2,3] x) => (float[2] y) <int64[1] axes = {2}> { y = ReduceMean<keepdims = 0>(x, axes) })"),
            "");
}

TEST(ShapeInferenceTest, NormalizationsAndSoftmax) {
  Graph g = MustImport(18, R"(
    g (float[1,128,768] x, float[768] s, float[768] b, float[8,64,28,28] im, float[64] c)
      => (float[1,128,768] y) {
      y, mean, inv = LayerNormalization<axis = -1, epsilon = 1e-5>(x, s, b)
      bn = BatchNormalization(im, c, c, c, c)
      inn = InstanceNormalization(im, c, c)
      sm = Softmax<axis = 1>(x)
      lsm = LogSoftmax(x)
    })");
  EXPECT_EQ(ShapeOf(g, "y"), Shape({1, 128, 768}));
  EXPECT_EQ(ShapeOf(g, "mean"), Shape({1, 128, 1}));
  EXPECT_EQ(ShapeOf(g, "bn"), Shape({8, 64, 28, 28}));
  EXPECT_EQ(ShapeOf(g, "inn"), Shape({8, 64, 28, 28}));
  EXPECT_EQ(ShapeOf(g, "sm"), Shape({1, 128, 768}));
  EXPECT_EQ(ShapeOf(g, "lsm"), Shape({1, 128, 768}));
  EXPECT_NE(ImportError(18, R"(
    g (float[2,3] x) => (float[2,3] y) { y = Softmax<axis = 2>(x) })"),
            "");
}

TEST(ShapeInferenceTest, ReshapeZeroMinusOneAndAllowzero) {
  Graph g = MustImport(18, R"(
    g (float[2,3,4] x, float[0,3] z) => (float[2,12] y) <int64[2] keep_first = {0, -1}, int64[1] flat = {-1}, int64[2] zero_dims = {3, 0},
       int64[2] copy_zero = {0, 3}> {
      y = Reshape(x, keep_first)
      t = Reshape(x, flat)
      zz = Reshape<allowzero = 1>(z, zero_dims)
      zc = Reshape(z, copy_zero)
    })");
  EXPECT_EQ(ShapeOf(g, "y"), Shape({2, 12}));
  EXPECT_EQ(ShapeOf(g, "t"), Shape({24}));
  EXPECT_EQ(ShapeOf(g, "zz"), Shape({3, 0}));
  EXPECT_EQ(ShapeOf(g, "zc"), Shape({0, 3}));
  EXPECT_EQ(ImportError(18, R"(
    g (float[2,3] x) => (float[4,2] y) <int64[2] s = {4, 2}> { y = Reshape(x, s) })"),
            "onnx text: node 'Reshape_0' (Reshape): cannot reshape [2,3] (6 elements) to [4,2]");
}

TEST(ShapeInferenceTest, ValuesNeededAtPlanTimeMustBeConstant) {
  EXPECT_EQ(ImportError(18, R"(
    g (float[2,3] x, int64[2] s) => (float[3,2] y) { y = Reshape(x, s) })"),
            "onnx text: node 'Reshape_0' (Reshape): input 's' (shape) is computed at run time; "
            "kfleet needs it known at plan time");
  // When the model declares the output's shape, that shape is used and nothing is inferred.
  Result<Graph> g = ImportOnnxText(import_testing::OnnxText(18, R"(
    g (float[2,3] x, int64[2] s) => (float[3,2] y) { y = Reshape(x, s) })"),
                                   ImportOptions{});
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  EXPECT_EQ(ShapeOf(*g, "y"), Shape({3, 2}));
}

TEST(ShapeInferenceTest, LayoutOps) {
  Graph g = MustImport(13, R"(
    g (float[2,3,4] x, float[2,1,4,1] ones) => (float[4,3,2] y) <int64[1] sq_axes = {-1}, int64[2] un_axes = {0, -1}, int64[5] ex_shape = {3, 1, 1, 1, 5},
       int64[3] reps = {1, 2, 3}> {
      y = Transpose(x)
      p = Transpose<perm = [0,2,1]>(x)
      sq = Squeeze(ones, sq_axes)
      all = Squeeze(ones)
      un = Unsqueeze(x, un_axes)
      fl = Flatten<axis = 2>(x)
      fl0 = Flatten<axis = 0>(x)
      ex = Expand(ones, ex_shape)
      ti = Tile(x, reps)
      tr = Trilu<upper = 0>(x)
    })");
  EXPECT_EQ(ShapeOf(g, "y"), Shape({4, 3, 2}));
  EXPECT_EQ(ShapeOf(g, "p"), Shape({2, 4, 3}));
  EXPECT_EQ(ShapeOf(g, "sq"), Shape({2, 1, 4}));
  EXPECT_EQ(ShapeOf(g, "all"), Shape({2, 4}));
  EXPECT_EQ(ShapeOf(g, "un"), Shape({1, 2, 3, 4, 1}));
  EXPECT_EQ(ShapeOf(g, "fl"), Shape({6, 4}));
  EXPECT_EQ(ShapeOf(g, "fl0"), Shape({1, 24}));
  EXPECT_EQ(ShapeOf(g, "ex"), Shape({3, 2, 1, 4, 5}));
  EXPECT_EQ(ShapeOf(g, "ti"), Shape({2, 6, 12}));
  EXPECT_EQ(ShapeOf(g, "tr"), Shape({2, 3, 4}));
  EXPECT_NE(ImportError(13, R"(
    g (float[2,3] x) => (float[2,3] y) <int64[1] a = {0}> { y = Squeeze(x, a) })"),
            "");
}

TEST(ShapeInferenceTest, SplitSizesFromInputAttributeOrNumOutputs) {
  Graph sizes = MustImport(13, R"(
    g (float[1,128,2304] x) => (float[1,128,768] q) <int64[3] parts = {768, 768, 768}> {
      q, k, v = Split<axis = 2>(x, parts)
      a, b = Split<axis = 1>(x)
    })");
  EXPECT_EQ(ShapeOf(sizes, "v"), Shape({1, 128, 768}));
  EXPECT_EQ(ShapeOf(sizes, "b"), Shape({1, 64, 2304}));
  // Opset 18: num_outputs, the last part smaller when the dim does not divide.
  Graph uneven = MustImport(18, R"(
    g (float[10,4] x) => (float[4,4] a) { a, b, c = Split<num_outputs = 3>(x) })");
  EXPECT_EQ(ShapeOf(uneven, "a"), Shape({4, 4}));
  EXPECT_EQ(ShapeOf(uneven, "c"), Shape({2, 4}));
  EXPECT_NE(ImportError(13, R"(
    g (float[10] x) => (float[4] a) <int64[2] s = {4, 4}> { a, b = Split(x, s) })"),
            "");
}

TEST(ShapeInferenceTest, SliceClampsStartsEndsAndSteps) {
  Graph g = MustImport(18, R"(
    g (float[10,20,30] x) => (float[10,20,5] y) <int64[1] s1 = {-5}, int64[1] e1 = {100}, int64[1] a1 = {-1},
       int64[1] s2 = {2}, int64[1] big = {9223372036854775807}, int64[1] a2 = {1},
       int64[1] minus1 = {-1}, int64[1] small = {-9223372036854775807}, int64[1] a3 = {0},
       int64[1] neg = {-2}, int64[1] zero = {0}, int64[1] three = {3}, int64[1] five = {5},
       int64[1] two = {2}> {
      y = Slice(x, s1, e1, a1)
      to_end = Slice(x, s2, big, a2)
      back = Slice(x, minus1, small, a3, neg)
      stepped = Slice(x, zero, big, a3, three)
      empty = Slice(x, five, two, a1)
    })");
  EXPECT_EQ(ShapeOf(g, "y"), Shape({10, 20, 5}));
  EXPECT_EQ(ShapeOf(g, "to_end"), Shape({10, 18, 30}));
  EXPECT_EQ(ShapeOf(g, "back"), Shape({5, 20, 30}));
  EXPECT_EQ(ShapeOf(g, "stepped"), Shape({4, 20, 30}));
  EXPECT_EQ(ShapeOf(g, "empty"), Shape({10, 20, 0}));
}

TEST(ShapeInferenceTest, GatherConcatAndGatherElements) {
  Graph g = MustImport(18, R"(
    g (float[50257,768] table, int64[1,128] ids, float[4,5,6] x, int64[4,2,6] idx)
      => (float[1,128,768] e) <int64 scalar = {2}> {
      e = Gather(table, ids)
      col = Gather<axis = 1>(x, scalar)
      cat = Concat<axis = -1>(x, x)
      ge = GatherElements<axis = 1>(x, idx)
    })");
  EXPECT_EQ(ShapeOf(g, "e"), Shape({1, 128, 768}));
  EXPECT_EQ(ShapeOf(g, "col"), Shape({4, 6}));
  EXPECT_EQ(ShapeOf(g, "cat"), Shape({4, 5, 12}));
  EXPECT_EQ(ShapeOf(g, "ge"), Shape({4, 2, 6}));
  EXPECT_NE(ImportError(18, R"(
    g (float[2,3] a, float[3,3] b) => (float[2,6] y) { y = Concat<axis = 1>(a, b) })"),
            "");
}

TEST(ShapeInferenceTest, PadAndResize) {
  Graph g = MustImport(18, R"(
    g (float[1,3,8,8] x) => (float[1,3,10,12] y) <int64[8] pads = {0, 0, 1, 2, 0, 0, 1, 2}, int64[4] hw = {1, 1, 0, 0},
       float zero = {0.0}, int64[2] axes = {2, 3}, float[4] scales = {1.0, 1.0, 2.0, 2.5},
       int64[4] sizes = {1, 3, 5, 6}, int64[2] hw_sizes = {16, 32}, float[0] empty_scales = {}> {
      y = Pad(x, pads)
      ax = Pad(x, hw, zero, axes)
      up = Resize<mode = "nearest">(x, , scales)
      lin = Resize<mode = "linear">(x, , , sizes)
      keep = Resize<keep_aspect_ratio_policy = "not_larger", axes = [2,3]>(x, , , hw_sizes)
      empty = Resize(x, , empty_scales, sizes)
    })");
  EXPECT_EQ(ShapeOf(g, "y"), Shape({1, 3, 10, 12}));
  EXPECT_EQ(ShapeOf(g, "ax"), Shape({1, 3, 9, 9}));
  EXPECT_EQ(ShapeOf(g, "up"), Shape({1, 3, 16, 20}));
  EXPECT_EQ(ShapeOf(g, "lin"), Shape({1, 3, 5, 6}));
  EXPECT_EQ(ShapeOf(g, "keep"), Shape({1, 3, 16, 16}));
  EXPECT_EQ(ShapeOf(g, "empty"), Shape({1, 3, 5, 6}));
}

TEST(ShapeInferenceTest, ShapeWithStartAndEnd) {
  Graph g = MustImport(18, R"(
    g (float[2,3,4,5] x, float[2,3,4,5] unused) => (float[2,3,4,5] y) {
      y = Identity(x)
      tail = Shape<start = -2>(x)
      mid = Shape<start = 1, end = -1>(x)
      s = Shape(x)
      ys = Reshape(y, s)
    })");
  EXPECT_EQ(ShapeOf(g, "tail"), Shape({2}));
  EXPECT_EQ(ShapeOf(g, "mid"), Shape({2}));
  EXPECT_EQ(ValueNamed(g, "mid").constant->ints, std::vector<int64_t>({3, 4}));
  EXPECT_EQ(ShapeOf(g, "ys"), Shape({2, 3, 4, 5}));
}

TEST(ShapeInferenceTest, CastTargetsMustBeSupportedTypes) {
  EXPECT_EQ(ImportError(18, R"(
    g (float[2] x) => (float[2] y) { y = Cast<to = 8>(x) })"),
            "onnx text: node 'Cast_0' (Cast): tensor element type STRING is not supported");
}

}  // namespace
}  // namespace kfleet::planner
