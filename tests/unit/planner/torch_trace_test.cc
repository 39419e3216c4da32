#include "planner/torch_trace.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "common/files.h"
#include "common/temp_dir.h"
#include "planner/onnx_import.h"
#include "planner/plan.h"

namespace kfleet::planner {
namespace {

using Json = nlohmann::json;

// A CPU op on the Python thread, as Kineto writes it; `dims` is its "Input Dims".
Json CpuOp(const std::string& name, double ts_us, double dur_us, Json dims = Json::array()) {
  return {{"ph", "X"},     {"cat", "cpu_op"},
          {"name", name},  {"pid", 100},
          {"tid", 100},    {"ts", ts_us},
          {"dur", dur_us}, {"args", {{"Input Dims", std::move(dims)}}}};
}

// A kernel launch at `ts_us` on the Python thread and the kernel it starts, which runs later on
// the GPU for `dur_us`.
std::vector<Json> Launch(double ts_us, int correlation, double dur_us,
                         const std::string& category = "kernel") {
  return {{{"ph", "X"},
           {"cat", "cuda_runtime"},
           {"name", "cudaLaunchKernel"},
           {"pid", 100},
           {"tid", 100},
           {"ts", ts_us},
           {"dur", 1},
           {"args", {{"correlation", correlation}}}},
          {{"ph", "X"},
           {"cat", category},
           {"name", "some_kernel"},
           {"pid", 0},
           {"tid", 7},
           {"ts", ts_us + 500},
           {"dur", dur_us},
           {"args", {{"correlation", correlation}}}}};
}

Json ProfilerStep(int n, double ts_us, double dur_us) {
  return {{"ph", "X"},
          {"cat", "user_annotation"},
          {"name", "ProfilerStep#" + std::to_string(n)},
          {"pid", 100},
          {"tid", 100},
          {"ts", ts_us},
          {"dur", dur_us}};
}

std::string Trace(const std::vector<std::vector<Json>>& parts) {
  Json events = Json::array();
  for (const auto& part : parts) {
    for (const Json& e : part) events.push_back(e);
  }
  return Json{{"traceEvents", events}}.dump();
}

int Tensor(Graph& g, const std::string& name, Shape shape) {
  Value v;
  v.name = name;
  v.shape = std::move(shape);
  v.has_shape = true;
  return g.AddValue(std::move(v));
}

void Op(Graph& g, const std::string& name, const std::string& op, std::vector<int> in, int out) {
  Node n;
  n.name = name;
  n.op_type = op;
  n.inputs = std::move(in);
  n.outputs = {out};
  g.AddNode(std::move(n));
}

// x[1,8,16,16] -> Conv(w, b) -> Relu -> out: a conv whose BatchNorm the export folded away.
Graph ConvRelu() {
  Graph g;
  int x = Tensor(g, "x", {1, 8, 16, 16});
  int w = Tensor(g, "w", {8, 8, 3, 3});
  int b = Tensor(g, "b", {8});
  int y = Tensor(g, "y", {1, 8, 16, 16});
  int r = Tensor(g, "r", {1, 8, 16, 16});
  Op(g, "conv", "Conv", {x, w, b}, y);
  Op(g, "relu", "Relu", {y}, r);
  return g;
}

const Json kConvDims = {{1, 8, 16, 16}, {8, 8, 3, 3}, Json::array()};
const Json kReluDims = {{1, 8, 16, 16}};

TEST(TorchTraceTest, TwoOpsGetTheirKernelsTime) {
  std::string trace = Trace({{CpuOp("aten::conv2d", 0, 10, kConvDims)},
                             Launch(2, 1, 5.0),
                             {CpuOp("aten::relu_", 20, 10, kReluDims)},
                             Launch(22, 2, 3.0)});
  Result<std::map<std::string, double>> s =
      MeasuredTimesFromTorchTrace(trace, "t.json", ConvRelu());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->size(), 2u);
  EXPECT_DOUBLE_EQ(s->at("conv"), 5e-6);
  EXPECT_DOUBLE_EQ(s->at("relu"), 3e-6);
}

TEST(TorchTraceTest, KernelsLaunchedByNestedOpsCountForTheTopLevelOp) {
  std::string trace =
      Trace({{CpuOp("aten::conv2d", 0, 20, kConvDims), CpuOp("aten::convolution", 0, 19, kConvDims),
              CpuOp("aten::cudnn_convolution", 2, 16, kConvDims)},
             Launch(3, 1, 4.0),
             Launch(5, 2, 6.0),
             Launch(7, 3, 0.5, "gpu_memset"),
             {CpuOp("aten::relu_", 30, 10, kReluDims), CpuOp("aten::clamp_min_", 31, 8, kReluDims)},
             Launch(32, 4, 3.0)});
  Result<std::map<std::string, double>> s =
      MeasuredTimesFromTorchTrace(trace, "t.json", ConvRelu());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_DOUBLE_EQ(s->at("conv"), 10.5e-6);
  EXPECT_DOUBLE_EQ(s->at("relu"), 3e-6);
}

TEST(TorchTraceTest, BatchNormAfterConvIsFoldedIntoTheConv) {
  std::string trace = Trace({{CpuOp("aten::conv2d", 0, 10, kConvDims)},
                             Launch(2, 1, 5.0),
                             {CpuOp("aten::batch_norm", 10, 10, kReluDims)},
                             Launch(12, 2, 2.0),
                             {CpuOp("aten::relu_", 20, 10, kReluDims)},
                             Launch(22, 3, 3.0)});
  Result<std::map<std::string, double>> s =
      MeasuredTimesFromTorchTrace(trace, "t.json", ConvRelu());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_DOUBLE_EQ(s->at("conv"), 7e-6);
  EXPECT_DOUBLE_EQ(s->at("relu"), 3e-6);
}

TEST(TorchTraceTest, BatchNormWithoutAConvBeforeItIsAnError) {
  std::string trace = Trace({{CpuOp("aten::relu_", 0, 10, kReluDims)},
                             Launch(2, 1, 3.0),
                             {CpuOp("aten::batch_norm", 10, 10, kReluDims)},
                             Launch(12, 2, 2.0)});
  Result<std::map<std::string, double>> s =
      MeasuredTimesFromTorchTrace(trace, "t.json", ConvRelu());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(),
            "t.json: aten::batch_norm #1 follows aten::relu_, not a convolution, and the model "
            "has no BatchNormalization node");
}

TEST(TorchTraceTest, CountMismatchIsAnError) {
  std::string trace = Trace({{CpuOp("aten::conv2d", 0, 10, kConvDims)},
                             Launch(2, 1, 5.0),
                             {CpuOp("aten::conv2d", 10, 10, kConvDims)},
                             Launch(12, 2, 5.0)});
  Result<std::map<std::string, double>> s =
      MeasuredTimesFromTorchTrace(trace, "t.json", ConvRelu());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(), "t.json: torch trace has 2 aten::conv2d, the model 1 Conv nodes");
}

TEST(TorchTraceTest, ShapeMismatchIsAnError) {
  Json wrong_dims = {{1, 8, 32, 32}, {8, 8, 3, 3}, Json::array()};
  std::string trace = Trace({{CpuOp("aten::conv2d", 0, 10, wrong_dims)}, Launch(2, 1, 5.0)});
  Result<std::map<std::string, double>> s =
      MeasuredTimesFromTorchTrace(trace, "t.json", ConvRelu());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(),
            "t.json: aten::conv2d #1 has input [1,8,32,32], but node 'conv' (Conv) has inputs "
            "[1,8,16,16], [8,8,3,3], [8]");
}

TEST(TorchTraceTest, OpsWithoutKernelsNeedNotMatchInCount) {
  std::string trace = Trace({{CpuOp("aten::conv2d", 0, 10, kConvDims)},
                             Launch(2, 1, 5.0),
                             {CpuOp("aten::view", 10, 2, kReluDims)}});
  Result<std::map<std::string, double>> s =
      MeasuredTimesFromTorchTrace(trace, "t.json", ConvRelu());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->size(), 1u);
  EXPECT_DOUBLE_EQ(s->at("conv"), 5e-6);
}

TEST(TorchTraceTest, LastCompleteProfilerStepIsUsed) {
  std::string trace = Trace({{ProfilerStep(1, 0, 100), CpuOp("aten::conv2d", 0, 10, kConvDims)},
                             Launch(2, 1, 50.0),
                             {CpuOp("aten::relu_", 20, 10, kReluDims)},
                             Launch(22, 2, 30.0),
                             {ProfilerStep(2, 100, 100), CpuOp("aten::conv2d", 100, 10, kConvDims)},
                             Launch(102, 3, 5.0),
                             {CpuOp("aten::relu_", 120, 10, kReluDims)},
                             Launch(122, 4, 3.0),
                             // Profiling stopped after this step's conv.
                             {ProfilerStep(3, 200, 15), CpuOp("aten::conv2d", 200, 10, kConvDims)},
                             Launch(202, 5, 7.0)});
  Result<std::map<std::string, double>> s =
      MeasuredTimesFromTorchTrace(trace, "t.json", ConvRelu());
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_DOUBLE_EQ(s->at("conv"), 5e-6);
  EXPECT_DOUBLE_EQ(s->at("relu"), 3e-6);
}

TEST(TorchTraceTest, NotJsonIsAnError) {
  Result<std::map<std::string, double>> s =
      MeasuredTimesFromTorchTrace("{\"traceEvents\": [", "t.json", ConvRelu());
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.status().message(), "t.json: not valid JSON");
}

TEST(TorchTraceTest, JsonWithoutTraceEventsIsAnError) {
  Result<std::map<std::string, double>> s =
      MeasuredTimesFromTorchTrace("{\"node_us\": {}}", "t.json", ConvRelu());
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.status().message().find("t.json: not a torch profiler trace"), std::string::npos);
}

TEST(TorchTraceTest, LoadNodeProfileReadsBothFormats) {
  Result<TempDir> dir = TempDir::Create("torch-trace-test");
  ASSERT_TRUE(dir.ok()) << dir.status().ToString();
  std::string trace_path = (dir->path() / "trace.json").string();
  std::string node_us_path = (dir->path() / "profile.json").string();
  ASSERT_TRUE(WriteFileAtomic(trace_path,
                              Trace({{CpuOp("aten::conv2d", 0, 10, kConvDims)}, Launch(2, 1, 5.0)}))
                  .ok());
  ASSERT_TRUE(WriteFileAtomic(node_us_path, R"({"node_us": {"relu": 2.5}})").ok());

  Result<std::map<std::string, double>> from_trace = LoadNodeProfile(trace_path, ConvRelu());
  ASSERT_TRUE(from_trace.ok()) << from_trace.status().ToString();
  EXPECT_DOUBLE_EQ(from_trace->at("conv"), 5e-6);
  Result<std::map<std::string, double>> from_node_us = LoadNodeProfile(node_us_path, ConvRelu());
  ASSERT_TRUE(from_node_us.ok()) << from_node_us.status().ToString();
  EXPECT_DOUBLE_EQ(from_node_us->at("relu"), 2.5e-6);

  ASSERT_TRUE(WriteFileAtomic(trace_path, Trace({{CpuOp("aten::conv2d", 0, 10, kConvDims)},
                                                 Launch(2, 1, 5.0),
                                                 {CpuOp("aten::conv2d", 10, 10, kConvDims)},
                                                 Launch(12, 2, 5.0)}))
                  .ok());
  Result<std::map<std::string, double>> mismatch = LoadNodeProfile(trace_path, ConvRelu());
  ASSERT_FALSE(mismatch.ok());
  EXPECT_EQ(mismatch.status().message(),
            trace_path + ": torch trace has 2 aten::conv2d, the model 1 Conv nodes");
}

std::string DataPath(const std::string& file) {
  const char* root = std::getenv("KFLEET_TEST_DATA");
  return std::string(root != nullptr ? root : "tests/data") + "/models/" + file;
}

// Time the GPU did anything: the union of all GPU activity intervals of the trace.
double GpuBusyUs(const std::string& trace_text) {
  std::vector<std::pair<double, double>> spans;
  Json doc = Json::parse(trace_text);
  for (const Json& e : doc["traceEvents"]) {
    std::string cat = e.value("cat", "");
    if (cat == "kernel" || cat == "gpu_memset" || cat == "gpu_memcpy") {
      spans.emplace_back(e["ts"].get<double>(), e["ts"].get<double>() + e["dur"].get<double>());
    }
  }
  std::sort(spans.begin(), spans.end());
  double busy_us = 0;
  double covered_to = 0;
  for (const auto& [start, end] : spans) {
    double from = std::max(start, covered_to);
    if (end > from) busy_us += end - from;
    covered_to = std::max(covered_to, end);
  }
  return busy_us;
}

TEST(TorchTraceTest, ResNet50TraceTimesEveryComputeNode) {
  std::string trace_path = DataPath("resnet50_fp16_torch_trace.json");
  Result<Graph> graph = ImportOnnxFile(DataPath("resnet50_b8.onnx"), ImportOptions{});
  ASSERT_TRUE(graph.ok()) << graph.status().ToString();
  Result<std::map<std::string, double>> s = LoadNodeProfile(trace_path, *graph);
  ASSERT_TRUE(s.ok()) << s.status().ToString();

  // The flatten before the Gemm is timed too, at zero: it launched no kernel.
  std::map<std::string, int> expected = {{"Conv", 53},   {"Relu", 49},      {"Add", 16},
                                         {"MaxPool", 1}, {"ReduceMean", 1}, {"Gemm", 1}};
  std::map<std::string, int> timed;
  double total_s = 0;
  for (const Node& n : graph->nodes) {
    auto it = s->find(n.name);
    if (it == s->end()) continue;
    if (expected.count(n.op_type) != 0) {
      EXPECT_GT(it->second, 0) << DescribeNode(n);
    }
    ++timed[n.op_type];
    total_s += it->second;
  }
  for (const auto& [op_type, count] : expected) EXPECT_EQ(timed[op_type], count) << op_type;

  Result<std::string> text = ReadFile(trace_path);
  ASSERT_TRUE(text.ok());
  double busy_s = GpuBusyUs(*text) * 1e-6;
  EXPECT_GT(total_s, 0.5 * busy_s);
  EXPECT_LE(total_s, busy_s * (1 + 1e-9));
}

}  // namespace
}  // namespace kfleet::planner
