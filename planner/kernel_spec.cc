#include "planner/kernel_spec.h"
