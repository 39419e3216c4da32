// MatMul and Gemm (cuBLASLt), Conv and pooling (cuDNN and the direct kernels) on the CUDA
// baseline, each against the float64 reference on random inputs and weights.
#include <gtest/gtest.h>

#include <string>
#include <string_view>

#include "cuda_testing.h"

namespace kfleet::cuda {
namespace {

using testing::Checked;
using testing::Model;
using testing::RunAndCompare;
using testing::Tolerance;

// The GPU and the reference round their f16 / bf16 outputs independently, so an output near a
// rounding boundary may come out one unit in the last place apart: for the largest outputs
// (4-5 rms) that is 4-5 rms times 2^-10 (f16) or 2^-7 (bf16).
constexpr Tolerance kHalfTolerance{.f32 = 1e-5, .f16 = 6e-3, .bf16 = 5e-2};
// f32 products over K in the thousands accumulate rounding in an order the reference does not.
constexpr Tolerance kLongKTolerance{.f32 = 5e-5, .f16 = 6e-3, .bf16 = 5e-2};

void ExpectMatches(std::string_view body, const Tolerance& tolerance = {}) {
  const Result<Checked> checked = RunAndCompare(Model(body), tolerance);
  ASSERT_TRUE(checked.ok()) << checked.status().ToString();
}

// ---- MatMul ----

TEST(CudaMatMulTest, TwoDimensionalAndOddSizes) {
  KF_REQUIRE_GPU();
  ExpectMatches(R"(g (float[64,96] a, float[96,80] b, float[7,13] c, float[13,5] d)
      => (float[64,80] y, float[7,5] z) {
    y = MatMul(a, b)
    z = MatMul(c, d)
  })");
}

TEST(CudaMatMulTest, BatchedAttentionShapes) {
  KF_REQUIRE_GPU();
  ExpectMatches(R"(g (float[1,12,128,64] q, float[1,12,64,128] k, float[4,33,17] a, float[4,17,9] b)
      => (float[1,12,128,128] scores, float[4,33,9] y) {
    scores = MatMul(q, k)
    y = MatMul(a, b)
  })");
}

TEST(CudaMatMulTest, BroadcastWeightIsOneProduct) {
  KF_REQUIRE_GPU();
  ExpectMatches(R"(g (float[2,128,768] x, float[768,3072] w, float[2,16,3072] h, float[3072,768] v)
      => (float[2,128,3072] up, float[2,16,768] down) {
    up = MatMul(x, w)
    down = MatMul(h, v)
  })",
                kLongKTolerance);
}

TEST(CudaMatMulTest, BroadcastBatchDims) {
  KF_REQUIRE_GPU();
  // [2,1] with [3]: a strided batch of 3 looped twice; [] with [3]: A repeated with stride 0.
  ExpectMatches(R"(g (float[2,1,5,7] a, float[3,7,4] b, float[5,7] m)
      => (float[2,3,5,4] y, float[3,5,4] z) {
    y = MatMul(a, b)
    z = MatMul(m, b)
  })");
}

TEST(CudaMatMulTest, VectorOperands) {
  KF_REQUIRE_GPU();
  ExpectMatches(R"(g (float[13] v, float[13,5] m, float[7,13] n, float[3,7,13] t, float[3,13,5] u)
      => (float[5] vm, float[7] nv, float[3,7] tv, float[3,5] vu) {
    vm = MatMul(v, m)
    nv = MatMul(n, v)
    tv = MatMul(t, v)
    vu = MatMul(v, u)
  })");
}

TEST(CudaMatMulTest, HalfTypes) {
  KF_REQUIRE_GPU();
  ExpectMatches(R"(g (float16[2,64,256] a, float16[256,128] b, float16[1,4,64,32] q,
                      float16[1,4,32,64] k, bfloat16[2,64,256] c, bfloat16[256,128] d,
                      float16[7,13] e, float16[13,5] f)
      => (float16[2,64,128] y, float16[1,4,64,64] s, bfloat16[2,64,128] z, float16[7,5] o) {
    y = MatMul(a, b)
    s = MatMul(q, k)
    z = MatMul(c, d)
    o = MatMul(e, f)
  })",
                kHalfTolerance);
}

TEST(CudaMatMulTest, IntegersAreExact) {
  KF_REQUIRE_GPU();
  ExpectMatches(
      R"(g (int64[3,4] a, int64[4,2] b, int64[2,3,4] c) => (int64[3,2] y, int64[2,3,2] z) {
    y = MatMul(a, b)
    z = MatMul(c, b)
  })");
}

// ---- Gemm ----

TEST(CudaGemmTest, TransBWithRowBiasUsesTheEpilogue) {
  KF_REQUIRE_GPU();
  ExpectMatches(R"(g (float[32,64] a, float[48,64] b, float[48] c, float[1,48] r, float[7,13] x,
                      float[5,13] w, float[5] v)
      => (float[32,48] y, float[32,48] yr, float[7,5] z, float[32,48] scaled) {
    y = Gemm<transB = 1>(a, b, c)
    yr = Gemm<transB = 1>(a, b, r)
    z = Gemm<transB = 1>(x, w, v)
    scaled = Gemm<transB = 1, alpha = 0.25>(a, b, c)
  })");
}

TEST(CudaGemmTest, SingleOutputColumnWithBias) {
  KF_REQUIRE_GPU();
  // Shapes where cuBLASLt may have no bias-epilogue kernel fall back to the general path.
  ExpectMatches(R"(g (float[8,16] a, float[1,16] b, float[1] c, float[1,16] row, float[4,16] w,
                      float[4] bias)
      => (float[8,1] y, float[1,4] z) {
    y = Gemm<transB = 1>(a, b, c)
    z = Gemm<transB = 1>(row, w, bias)
  })");
}

TEST(CudaGemmTest, AlphaBetaWithFullC) {
  KF_REQUIRE_GPU();
  ExpectMatches(R"(g (float[16,24] a, float[24,40] b, float[16,40] c)
      => (float[16,40] y, float[16,40] z) {
    y = Gemm<alpha = 0.5, beta = 2.0>(a, b, c)
    z = Gemm(a, b, c)
  })");
}

TEST(CudaGemmTest, ScalarColumnAndScaledRowC) {
  KF_REQUIRE_GPU();
  ExpectMatches(R"(g (float[9,20] a, float[20,11] b, float s, float[9,1] col, float[1,11] row,
                      float[1] one)
      => (float[9,11] ys, float[9,11] yc, float[9,11] yr, float[9,11] yo) {
    ys = Gemm<beta = 0.5>(a, b, s)
    yc = Gemm(a, b, col)
    yr = Gemm<beta = 0.7>(a, b, row)
    yo = Gemm<alpha = 3.0>(a, b, one)
  })");
}

TEST(CudaGemmTest, TransposedOperandsWithoutC) {
  KF_REQUIRE_GPU();
  ExpectMatches(R"(g (float[20,9] at, float[20,11] b, float[11,20] bt)
      => (float[9,11] y, float[9,11] z) {
    y = Gemm<transA = 1>(at, b)
    z = Gemm<transA = 1, transB = 1>(at, bt)
  })");
}

TEST(CudaGemmTest, HalfTypes) {
  KF_REQUIRE_GPU();
  ExpectMatches(R"(g (float16[16,64] a, float16[32,64] b, float16[32] c, bfloat16[16,64] d,
                      bfloat16[32,64] e, bfloat16[32] f, float16[16,32] full)
      => (float16[16,32] y, bfloat16[16,32] z, float16[16,32] w) {
    y = Gemm<transB = 1>(a, b, c)
    z = Gemm<transB = 1>(d, e, f)
    w = Gemm<transB = 1, beta = 0.5>(a, b, full)
  })",
                kHalfTolerance);
}

// ---- Conv ----

TEST(CudaConvTest, ThreeByThreeStrideOneAndTwo) {
  KF_REQUIRE_GPU();
  ExpectMatches(R"(g (float[2,16,20,20] x, float[32,16,3,3] w, float[32] b)
      => (float[2,32,20,20] y, float[2,32,10,10] z) {
    y = Conv<pads = [1, 1, 1, 1]>(x, w, b)
    z = Conv<pads = [1, 1, 1, 1], strides = [2, 2]>(x, w, b)
  })");
}

TEST(CudaConvTest, PointwiseAndResNetStem) {
  KF_REQUIRE_GPU();
  ExpectMatches(R"(g (float[1,64,14,14] x, float[128,64,1,1] w, float[1,3,64,64] img,
                      float[64,3,7,7] stem)
      => (float[1,128,14,14] y, float[1,64,32,32] z) {
    y = Conv(x, w)
    z = Conv<kernel_shape = [7, 7], strides = [2, 2], pads = [3, 3, 3, 3]>(img, stem)
  })");
}

TEST(CudaConvTest, DepthwiseAndGrouped) {
  KF_REQUIRE_GPU();
  ExpectMatches(R"(g (float[2,32,16,16] x, float[32,1,3,3] dw, float[32] b, float[1,8,10,10] gx,
                      float[12,4,3,3] gw)
      => (float[2,32,16,16] y, float[2,32,8,8] z, float[1,12,8,8] grouped) {
    y = Conv<group = 32, pads = [1, 1, 1, 1]>(x, dw, b)
    z = Conv<group = 32, pads = [1, 1, 1, 1], strides = [2, 2]>(x, dw)
    grouped = Conv<group = 2>(gx, gw)
  })");
}

TEST(CudaConvTest, HalfTypes) {
  KF_REQUIRE_GPU();
  ExpectMatches(R"(g (float16[2,16,20,20] x, float16[32,16,3,3] w, float16[32] b,
                      float16[2,32,16,16] d, float16[32,1,3,3] dw, bfloat16[2,16,20,20] bx,
                      bfloat16[32,16,3,3] bw)
      => (float16[2,32,10,10] y, float16[2,32,16,16] z, bfloat16[2,32,20,20] bz) {
    y = Conv<pads = [1, 1, 1, 1], strides = [2, 2]>(x, w, b)
    z = Conv<group = 32, pads = [1, 1, 1, 1]>(d, dw)
    bz = Conv<pads = [1, 1, 1, 1]>(bx, bw)
  })",
                kHalfTolerance);
}

TEST(CudaConvTest, AsymmetricPadsDilationsAndOtherRanks) {
  KF_REQUIRE_GPU();
  // pads [0,1,2,0] and SAME_UPPER with an odd total need the padded copy; 1-D and 3-D convs
  // take cuDNN's 4-D and 5-D descriptors.
  ExpectMatches(R"(g (float[1,4,9,9] x, float[6,4,3,3] w, float[1,4,10,10] s, float[6] b,
                      float[1,4,12,12] d, float[2,4,17] line, float[8,4,5] lw,
                      float[1,2,6,6,6] vol, float[4,2,3,3,3] vw)
      => (float[1,6,9,8] asym, float[1,6,5,5] same, float[1,6,12,12] dilated,
          float[2,8,9] one_d, float[1,4,6,6,6] three_d) {
    asym = Conv<pads = [0, 1, 2, 0]>(x, w, b)
    same = Conv<auto_pad = "SAME_UPPER", strides = [2, 2]>(s, w)
    dilated = Conv<dilations = [2, 2], pads = [2, 2, 2, 2]>(d, w, b)
    one_d = Conv<pads = [2, 2], strides = [2]>(line, lw)
    three_d = Conv<pads = [1, 1, 1, 1, 1, 1]>(vol, vw)
  })");
}

// ---- Pooling ----

TEST(CudaPoolTest, MaxPoolResNetStem) {
  KF_REQUIRE_GPU();
  ExpectMatches(R"(g (float[2,16,32,32] x) => (float[2,16,16,16] y) {
    y = MaxPool<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]>(x)
  })");
}

TEST(CudaPoolTest, AveragePoolCountIncludePad) {
  KF_REQUIRE_GPU();
  ExpectMatches(R"(g (float[2,16,32,32] x)
      => (float[2,16,16,16] exclude, float[2,16,16,16] include, float[2,16,16,16] plain) {
    exclude = AveragePool<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]>(x)
    include = AveragePool<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1],
                          count_include_pad = 1>(x)
    plain = AveragePool<kernel_shape = [2, 2], strides = [2, 2]>(x)
  })");
}

TEST(CudaPoolTest, CeilModeDilationsAndAsymmetricPads) {
  KF_REQUIRE_GPU();
  // The last ceil_mode window of `include` reaches past the padding: the taps there do not count.
  ExpectMatches(R"(g (float[1,3,16,16] x)
      => (float[1,3,8,8] ceil_max, float[1,3,9,9] include, float[1,3,9,9] exclude,
          float[1,3,14,14] dilated, float[1,3,15,15] asym) {
    ceil_max = MaxPool<kernel_shape = [3, 3], strides = [2, 2], ceil_mode = 1>(x)
    include = AveragePool<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1],
                          ceil_mode = 1, count_include_pad = 1>(x)
    exclude = AveragePool<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1],
                          ceil_mode = 1>(x)
    dilated = MaxPool<kernel_shape = [2, 2], dilations = [2, 2]>(x)
    asym = AveragePool<kernel_shape = [3, 3], pads = [0, 0, 1, 1]>(x)
  })");
}

TEST(CudaPoolTest, HalfTypesAndOneDimension) {
  KF_REQUIRE_GPU();
  ExpectMatches(R"(g (float16[2,8,16,16] x, bfloat16[2,8,16,16] b, float[2,4,15] line)
      => (float16[2,8,8,8] mx, float16[2,8,8,8] avg, bfloat16[2,8,8,8] bmx, float[2,4,7] one_d) {
    mx = MaxPool<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]>(x)
    avg = AveragePool<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1],
                      count_include_pad = 1>(x)
    bmx = MaxPool<kernel_shape = [3, 3], strides = [2, 2], pads = [1, 1, 1, 1]>(b)
    one_d = MaxPool<kernel_shape = [3], strides = [2]>(line)
  })",
                kHalfTolerance);
}

TEST(CudaPoolTest, MaxPoolIndicesAreRefused) {
  KF_REQUIRE_GPU();
  const Result<Checked> checked = RunAndCompare(Model(R"(g (float[1,2,8,8] x)
      => (float[1,2,4,4] y, int64[1,2,4,4] i) {
    y, i = MaxPool<kernel_shape = [2, 2], strides = [2, 2]>(x)
  })"));
  ASSERT_FALSE(checked.ok());
  EXPECT_NE(checked.status().message().find("Indices"), std::string::npos)
      << checked.status().message();
}

}  // namespace
}  // namespace kfleet::cuda
