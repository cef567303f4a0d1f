#include "api/engine.h"
