#include "embed/image.h"
