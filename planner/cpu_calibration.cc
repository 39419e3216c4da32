#include "planner/cpu_calibration.h"
