#include "planner/rank.h"
