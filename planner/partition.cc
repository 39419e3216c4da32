#include "planner/partition.h"
