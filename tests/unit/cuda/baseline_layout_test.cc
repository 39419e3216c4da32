// The CUDA baseline's data-movement ops against the float64 reference, at every storage width,
// and a whole chain of mixed ops through the executor.
#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "cuda/baseline.h"
#include "cuda/device.h"
#include "cuda_testing.h"
#include "planner/onnx_import.h"
#include "runtime/feeds.h"
#include "runtime/tensor.h"

namespace kfleet::cuda {
namespace {

using testing::Model;
using testing::RunAndCompare;

// A type as ONNX text spells it and as Cast's `to` codes it.
struct ElementType {
  std::string_view name;
  int onnx = 1;
};
// Layout ops move 4-, 2-, 8- and 1-byte elements.
constexpr ElementType kAllTypes[] = {
    {"float", 1}, {"float16", 10}, {"bfloat16", 16}, {"int64", 7}, {"bool", 9}};
constexpr ElementType kFloatTypes[] = {{"float", 1}, {"float16", 10}, {"bfloat16", 16}};

// `body` with $T replaced by the type's name and $C by its Cast code.
std::string ForType(std::string body, const ElementType& type) {
  for (size_t at = body.find("$T"); at != std::string::npos; at = body.find("$T", at)) {
    body.replace(at, 2, type.name);
  }
  const std::string code = std::to_string(type.onnx);
  for (size_t at = body.find("$C"); at != std::string::npos; at = body.find("$C", at)) {
    body.replace(at, 2, code);
  }
  return body;
}

void ExpectMatches(const std::string& body, int opset = 17) {
  Result<testing::Checked> checked = RunAndCompare(Model(body, opset));
  ASSERT_TRUE(checked.ok()) << checked.status().ToString();
}

// Imports `body` without constant folding (so Shape, Range and ConstantOfShape run on the
// device), runs it once on drawn inputs (the graph's own weights kept) and returns the outputs by
// name.
std::map<std::string, runtime::Tensor> RunUnfolded(std::string_view body, int opset = 17) {
  planner::ImportOptions no_folding;
  no_folding.max_fold_elements = 0;
  Result<planner::Graph> g = planner::ImportOnnxText(Model(body, opset), no_folding);
  EXPECT_TRUE(g.ok()) << g.status().ToString();
  if (!g.ok()) return {};
  runtime::FeedOptions inputs_only;
  inputs_only.include_weights = false;
  Result<runtime::TensorMap> feeds = runtime::MakeRandomFeeds(*g, inputs_only);
  EXPECT_TRUE(feeds.ok()) << feeds.status().ToString();
  EXPECT_TRUE(UseDevice(0).ok());
  Result<std::unique_ptr<CudaBaseline>> executor = CudaBaseline::Create(*g);
  EXPECT_TRUE(executor.ok()) << executor.status().ToString();
  if (!feeds.ok() || !executor.ok()) return {};
  runtime::TensorMap outputs;
  const Status status = (*executor)->Run(*feeds, &outputs);
  EXPECT_TRUE(status.ok()) << status.ToString();
  std::map<std::string, runtime::Tensor> named;
  for (auto& [id, tensor] : outputs) named.emplace(g->values[id].name, std::move(tensor));
  return named;
}

void ExpectValues(const runtime::Tensor& t, planner::DType dtype, const planner::Shape& shape,
                  const std::vector<double>& expected) {
  EXPECT_EQ(t.dtype(), dtype);
  ASSERT_EQ(t.shape(), shape);
  ASSERT_EQ(static_cast<size_t>(t.elements()), expected.size());
  for (size_t i = 0; i < expected.size(); ++i) {
    EXPECT_EQ(t.GetDouble(static_cast<int64_t>(i)), expected[i]) << "element " << i;
  }
}

TEST(CudaLayoutTest, ViewsAndDropoutAtEveryFloatType) {
  KF_REQUIRE_GPU();
  const std::string body = R"(g ($T[2,3,4] x) => ($T[4,6] r, $T[1,2,3,4] u, $T[2,3,4] s,
      $T[6,4] f, $T[2,3,4] i, $T[2,3,4] d, bool[2,3,4] m, $T[4,6] nr) {
    shape = Constant<value = int64[2] {4, 6}>()
    r = Reshape(x, shape)
    zero = Constant<value = int64[1] {0}>()
    u = Unsqueeze(x, zero)
    s = Squeeze(u, zero)
    f = Flatten<axis = 2>(x)
    i = Identity(x)
    d, m = Dropout(x)
    nr = Neg(r)
  })";
  for (const ElementType& type : kFloatTypes) {
    SCOPED_TRACE(type.name);
    ExpectMatches(ForType(body, type));
  }
}

TEST(CudaLayoutTest, TransposePermsAtEveryType) {
  KF_REQUIRE_GPU();
  // Tiled (a, c with and without a batch dim), rows kept whole (bt, cs), and strided copies
  // (br, dt: NHWC to NCHW with 3 channels, et).
  const std::string body = R"(g ($T[64,96] a, $T[2,3,4,5] b, $T[3,50,40] c, $T[2,17,33,3] d,
      $T[5,7] e) => ($T[96,64] at, $T[2,4,3,5] bt, $T[5,4,3,2] br, $T[3,40,50] ct,
                     $T[2,3,17,33] dt, $T[7,5] et, $T[50,3,40] cs) {
    at = Transpose(a)
    bt = Transpose<perm = [0, 2, 1, 3]>(b)
    br = Transpose(b)
    ct = Transpose<perm = [0, 2, 1]>(c)
    dt = Transpose<perm = [0, 3, 1, 2]>(d)
    et = Transpose(e)
    cs = Transpose<perm = [1, 0, 2]>(c)
  })";
  for (const ElementType& type : kAllTypes) {
    SCOPED_TRACE(type.name);
    ExpectMatches(ForType(body, type));
  }
}

TEST(CudaLayoutTest, SliceWithStepsNegativeStepsAndAxes) {
  KF_REQUIRE_GPU();
  const std::string body = R"(g ($T[6,10] x, $T[4,5,6] y) => ($T[2,5] a, $T[6,4] rev,
      $T[3,5,2] b, $T[6,10] full, $T[1,10] last) {
    s1 = Constant<value = int64[2] {1, 0}>()
    e1 = Constant<value = int64[2] {5, 10}>()
    a1 = Constant<value = int64[2] {0, 1}>()
    t1 = Constant<value = int64[2] {2, 2}>()
    a = Slice(x, s1, e1, a1, t1)
    s2 = Constant<value = int64[1] {-1}>()
    e2 = Constant<value = int64[1] {-9223372036854775807}>()
    a2 = Constant<value = int64[1] {1}>()
    t2 = Constant<value = int64[1] {-3}>()
    rev = Slice(x, s2, e2, a2, t2)
    s3 = Constant<value = int64[2] {3, 5}>()
    e3 = Constant<value = int64[2] {0, 0}>()
    a3 = Constant<value = int64[2] {0, 2}>()
    t3 = Constant<value = int64[2] {-1, -3}>()
    b = Slice(y, s3, e3, a3, t3)
    s4 = Constant<value = int64[1] {0}>()
    e4 = Constant<value = int64[1] {10}>()
    a4 = Constant<value = int64[1] {1}>()
    full = Slice(x, s4, e4, a4)
    s5 = Constant<value = int64[1] {-1}>()
    e5 = Constant<value = int64[1] {6}>()
    a5 = Constant<value = int64[1] {0}>()
    last = Slice(x, s5, e5, a5)
  })";
  for (const ElementType& type : kAllTypes) {
    SCOPED_TRACE(type.name);
    ExpectMatches(ForType(body, type));
  }
}

TEST(CudaLayoutTest, SplitAndConcatOnSeveralAxes) {
  KF_REQUIRE_GPU();
  // Odd widths force narrow copy units; ten parts take two launches of eight and two.
  const std::string body = R"(g ($T[4,6,5] x, $T[2,6,5] y, $T[4,1,5] z, $T[4,6,3] w)
      => ($T[4,2,5] s0, $T[4,2,5] s1, $T[4,2,5] s2, $T[1,6,5] h0, $T[3,6,5] h1,
          $T[4,6,2] l0, $T[4,6,3] l1, $T[6,6,5] c0, $T[4,7,5] c1, $T[4,6,8] c2,
          $T[4,6,50] many) {
    s0, s1, s2 = Split<axis = 1, num_outputs = 3>(x)
    sizes = Constant<value = int64[2] {1, 3}>()
    h0, h1 = Split<axis = 0>(x, sizes)
    lsizes = Constant<value = int64[2] {2, 3}>()
    l0, l1 = Split<axis = -1>(x, lsizes)
    c0 = Concat<axis = 0>(x, y)
    c1 = Concat<axis = 1>(x, z)
    c2 = Concat<axis = -1>(x, w)
    many = Concat<axis = 2>(x, x, x, x, x, x, x, x, x, x)
  })";
  for (const ElementType& type : kAllTypes) {
    SCOPED_TRACE(type.name);
    ExpectMatches(ForType(body, type), 18);
  }
}

TEST(CudaLayoutTest, GatherWithNegativeAndRuntimeIndices) {
  KF_REQUIRE_GPU();
  const std::string body = R"(g ($T[5,4] t, int64[3] j, $T[3,6,4] d, int64[3,2,4] k)
      => ($T[2,2,4] g0, $T[5,3] g1, $T[3,4] g2, $T[3,6,2] g3, $T[3,4] g4, $T[3,2,4] ge,
          $T[2,4] gn) {
    i = Constant<value = int64[2,2] {0, -1, -5, 2}>()
    g0 = Gather(t, i)
    g1 = Gather<axis = 1>(t, j)
    g2 = Gather(t, j)
    neg = Constant<value = int64[2] {-1, -3}>()
    g3 = Gather<axis = -1>(d, neg)
    s = Constant<value = int64 {-2}>()
    g4 = Gather<axis = 1>(d, s)
    ge = GatherElements<axis = 1>(d, k)
    kc = Constant<value = int64[2,4] {-1, 0, 4, -5, 2, -2, 1, 3}>()
    gn = GatherElements<axis = 0>(t, kc)
  })";
  for (const ElementType& type : kAllTypes) {
    SCOPED_TRACE(type.name);
    ExpectMatches(ForType(body, type));
  }
}

TEST(CudaLayoutTest, ExpandAndTile) {
  KF_REQUIRE_GPU();
  const std::string body = R"(g ($T[3,1] x, $T[2,1,4] y, $T[2,3] z, $T v)
      => ($T[2,3,5] e0, $T[2,3,4] e1, $T[4,6] e2, $T[4,9] t0, $T[2,3,4] t1, $T[2,3] t2) {
    s0 = Constant<value = int64[3] {2, 3, 5}>()
    e0 = Expand(x, s0)
    s1 = Constant<value = int64[3] {2, 3, 4}>()
    e1 = Expand(y, s1)
    s2 = Constant<value = int64[2] {4, 6}>()
    e2 = Expand(v, s2)
    r0 = Constant<value = int64[2] {2, 3}>()
    t0 = Tile(z, r0)
    r1 = Constant<value = int64[3] {1, 3, 1}>()
    t1 = Tile(y, r1)
    r2 = Constant<value = int64[2] {1, 1}>()
    t2 = Tile(z, r2)
  })";
  for (const ElementType& type : kAllTypes) {
    SCOPED_TRACE(type.name);
    ExpectMatches(ForType(body, type));
  }
}

TEST(CudaLayoutTest, PadModes) {
  KF_REQUIRE_GPU();
  const std::string body = R"(g ($T[3,4] x, $T[2,3,5] y) => ($T[5,7] pc, $T[3,8] pr, $T[5,6] pe,
      $T[3,7] pw, $T[2,3,3] crop, $T[2,5,5] on_axis, $T[5,7] zero) {
    pads = Constant<value = int64[4] {1, 2, 1, 1}>()
    nine = Constant<value = float {9.0}>()
    value = Cast<to = $C>(nine)
    pc = Pad(x, pads, value)
    zero = Pad(x, pads)
    rp = Constant<value = int64[4] {0, 2, 0, 2}>()
    pr = Pad<mode = "reflect">(x, rp)
    ep = Constant<value = int64[4] {1, 1, 1, 1}>()
    pe = Pad<mode = "edge">(x, ep)
    wp = Constant<value = int64[4] {0, 1, 0, 2}>()
    pw = Pad<mode = "wrap">(x, wp)
    cp = Constant<value = int64[6] {0, 0, -1, 0, 0, -1}>()
    crop = Pad(y, cp)
    axes = Constant<value = int64[1] {1}>()
    ap = Constant<value = int64[2] {1, 1}>()
    on_axis = Pad(y, ap, , axes)
  })";
  for (const ElementType& type : kAllTypes) {
    SCOPED_TRACE(type.name);
    ExpectMatches(ForType(body, type), 19);
  }
}

TEST(CudaLayoutTest, TriluUpperLowerAndK) {
  KF_REQUIRE_GPU();
  const std::string body = R"(g ($T[2,5,7] x, int64 k) => ($T[2,5,7] u, $T[2,5,7] l,
                                                        $T[2,5,7] uk, $T[2,5,7] lk) {
    u = Trilu(x)
    l = Trilu<upper = 0>(x)
    kc = Constant<value = int64 {-1}>()
    uk = Trilu(x, kc)
    lk = Trilu<upper = 0>(x, k)
  })";
  for (const ElementType& type : kAllTypes) {
    SCOPED_TRACE(type.name);
    ExpectMatches(ForType(body, type));
  }
}

TEST(CudaLayoutTest, ShapeRangeConstantOfShapeAtRunTime) {
  KF_REQUIRE_GPU();
  auto out = RunUnfolded(R"(g (float[2,3] x) => (int64[2] s, int64[1] tail, float[4] r,
                                                int64[3] ri, int64[2,2] c, float[3] cf) {
    s = Shape(x)
    tail = Shape<start = -1>(x)
    start = Constant<value = float {1.0}>()
    limit = Constant<value = float {3.0}>()
    delta = Constant<value = float {0.5}>()
    r = Range(start, limit, delta)
    istart = Constant<value = int64 {10}>()
    ilimit = Constant<value = int64 {1}>()
    idelta = Constant<value = int64 {-3}>()
    ri = Range(istart, ilimit, idelta)
    cshape = Constant<value = int64[2] {2, 2}>()
    c = ConstantOfShape<value = int64[1] {7}>(cshape)
    fshape = Constant<value = int64[1] {3}>()
    cf = ConstantOfShape<value = float[1] {-0.5}>(fshape)
  })");
  using planner::DType;
  ASSERT_EQ(out.size(), 6u);
  ExpectValues(out["s"], DType::kI64, {2}, {2, 3});
  ExpectValues(out["tail"], DType::kI64, {1}, {3});
  ExpectValues(out["r"], DType::kF32, {4}, {1, 1.5, 2, 2.5});
  ExpectValues(out["ri"], DType::kI64, {3}, {10, 7, 4});
  ExpectValues(out["c"], DType::kI64, {2, 2}, {7, 7, 7, 7});
  ExpectValues(out["cf"], DType::kF32, {3}, {-0.5, -0.5, -0.5});
}

TEST(CudaLayoutTest, ConstantOutOfRangeIndexNamesTheNode) {
  KF_REQUIRE_GPU();
  ASSERT_TRUE(UseDevice(0).ok());
  Result<planner::Graph> g = planner::ImportOnnxText(Model(R"(g (float[3,2] t) => (float[1,2] y) {
    i = Constant<value = int64[1] {3}>()
    y = Gather(t, i)
  })"),
                                                     {});
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  Result<std::unique_ptr<CudaBaseline>> executor = CudaBaseline::Create(*g);
  ASSERT_FALSE(executor.ok());
  EXPECT_NE(executor.status().message().find("(Gather)"), std::string::npos)
      << executor.status().message();
  EXPECT_NE(executor.status().message().find("index 3 is out of range"), std::string::npos)
      << executor.status().message();
}

TEST(CudaLayoutTest, ResizeHasNoKernelYet) {
  KF_REQUIRE_GPU();
  ASSERT_TRUE(UseDevice(0).ok());
  Result<planner::Graph> g =
      planner::ImportOnnxText(Model(R"(g (float[1,1,2,2] x) => (float[1,1,4,4] y) {
    roi = Constant<value = float[0] {}>()
    scales = Constant<value = float[4] {1.0, 1.0, 2.0, 2.0}>()
    y = Resize<mode = "nearest">(x, roi, scales)
  })",
                                    18),
                              {});
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  Result<std::unique_ptr<CudaBaseline>> executor = CudaBaseline::Create(*g);
  ASSERT_FALSE(executor.ok());
  EXPECT_NE(executor.status().message().find("(Resize): no CUDA baseline kernel for Resize"),
            std::string::npos)
      << executor.status().message();
}

TEST(CudaBaselineExecutorTest, MixedChainMatchesTheReference) {
  KF_REQUIRE_GPU();
  const std::string body = R"(g ($T[4,6] x, $T[6] b) => ($T[3,8] y, $T[6,4] n, $T[6,8] c) {
    s = Add(x, b)
    t = Tanh(s)
    u = Transpose(t)
    shape = Constant<value = int64[2] {3, 8}>()
    y = Reshape(u, shape)
    n = Neg(u)
    c = Concat<axis = 1>(u, n)
  })";
  for (const ElementType& type : kFloatTypes) {
    SCOPED_TRACE(type.name);
    ExpectMatches(ForType(body, type));
  }
}

TEST(CudaBaselineExecutorTest, BuffersAreReusedAcrossAChain) {
  KF_REQUIRE_GPU();
  // Fifty elementwise ops and a view: each intermediate dies at once, so two pool buffers do.
  std::string body = "g (float[1024] x) => (float[1024] y) {\n  t0 = Relu(x)\n";
  for (int i = 1; i < 50; ++i) {
    body += "  t" + std::to_string(i) + " = Neg(t" + std::to_string(i - 1) + ")\n";
  }
  body += "  y = Identity(t49)\n}";
  ExpectMatches(body);
  ASSERT_TRUE(UseDevice(0).ok());
  Result<planner::Graph> g = planner::ImportOnnxText(Model(body), {});
  ASSERT_TRUE(g.ok()) << g.status().ToString();
  Result<std::unique_ptr<CudaBaseline>> executor = CudaBaseline::Create(*g);
  ASSERT_TRUE(executor.ok()) << executor.status().ToString();
  EXPECT_LE((*executor)->DeviceBytes(), int64_t{3} * 1024 * 4);
}

}  // namespace
}  // namespace kfleet::cuda
