#include "index/flat_index.h"
