#include "planner/onnx_import.h"
