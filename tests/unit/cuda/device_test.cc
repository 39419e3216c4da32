#include "cuda/device.h"

#include <gtest/gtest.h>

#include "cuda_testing.h"
#include "runtime/tensor.h"

namespace kfleet::cuda {
namespace {

TEST(CudaDeviceTest, ReportsWhyNoDeviceIsUsable) {
  const Status status = Available();
  if (status.ok()) GTEST_SKIP() << "a CUDA device is usable here; nothing to explain";
  EXPECT_EQ(status.code(), ErrorCode::kUnavailable);
  EXPECT_FALSE(status.message().empty());
  EXPECT_FALSE(Available(-1).ok());
}

TEST(CudaDeviceTest, PropertiesDescribeTheCard) {
  KF_REQUIRE_GPU();
  Result<DeviceProperties> p = Properties();
  ASSERT_TRUE(p.ok()) << p.status().message();
  EXPECT_FALSE(p->name.empty());
  EXPECT_GE(p->major, 5);
  EXPECT_GT(p->sms, 0);
  EXPECT_GT(p->l2_bytes, 0);
  EXPECT_GT(p->memory_bytes, int64_t{1} << 30);
  EXPECT_EQ(p->arch(), "sm_" + std::to_string(p->major) + std::to_string(p->minor));
  EXPECT_FALSE(Available(1 << 20).ok());
}

TEST(CudaDeviceTest, CopiesRoundTripAndTheDeviceIsHealthy) {
  KF_REQUIRE_GPU();
  ASSERT_TRUE(UseDevice(0).ok());
  runtime::Tensor host(planner::DType::kF32, {3, 1000});
  for (int64_t i = 0; i < host.elements(); ++i) host.SetDouble(i, 0.5 * static_cast<double>(i));
  Result<DeviceBuffer> buffer = Upload(host);
  ASSERT_TRUE(buffer.ok()) << buffer.status().message();
  EXPECT_EQ(buffer->bytes(), host.bytes());
  runtime::Tensor back(planner::DType::kF32, {3, 1000});
  ASSERT_TRUE(CopyToHost(buffer->data(), back).ok());
  EXPECT_TRUE(runtime::BitwiseEqual(host, back));
  const Status healthy = CheckHealthy();
  EXPECT_TRUE(healthy.ok()) << healthy.message();
}

TEST(CudaDeviceTest, FlushAndTimerMeasureDeviceWork) {
  KF_REQUIRE_GPU();
  Result<L2Flusher> flusher = L2Flusher::Create();
  ASSERT_TRUE(flusher.ok()) << flusher.status().message();
  Result<DeviceProperties> p = Properties();
  ASSERT_TRUE(p.ok());
  EXPECT_GE(flusher->bytes(), 2 * p->l2_bytes);
  Result<EventTimer> timer = EventTimer::Create();
  ASSERT_TRUE(timer.ok()) << timer.status().message();
  ASSERT_TRUE(timer->Start().ok());
  for (int i = 0; i < 4; ++i) ASSERT_TRUE(flusher->Flush().ok());
  ASSERT_TRUE(timer->Stop().ok());
  Result<double> us = timer->ElapsedUs();
  ASSERT_TRUE(us.ok()) << us.status().message();
  // Four writes of at least twice the L2 take measurable time on any GPU.
  EXPECT_GT(*us, 1.0);
}

TEST(CudaDeviceTest, AnAllocationTooLargeIsAClearError) {
  KF_REQUIRE_GPU();
  Result<DeviceBuffer> huge = DeviceBuffer::Allocate(size_t{1} << 52);
  ASSERT_FALSE(huge.ok());
  EXPECT_EQ(huge.status().code(), ErrorCode::kResourceExhausted);
  EXPECT_NE(huge.status().message().find("cudaMalloc"), std::string::npos);
  EXPECT_TRUE(CheckHealthy().ok());
}

}  // namespace
}  // namespace kfleet::cuda
