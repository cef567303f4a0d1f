// The JSON shapes facevec shows to users, shared by the CLI and the HTTP
// server so that `facevec query` and POST /v1/query print the same
// objects.
#pragma once

#include <cstddef>

#include <nlohmann/json.hpp>

#include "api/engine.h"

namespace facevec::api {

// One query's answer as {"query": query_index, "person": NAME or null,
// "distance": D, "top": [{"person": NAME, "face": ID, "distance": D},
// ...]}, keys in that order. Distances are squared L2, written as the shortest
// decimal that reads back as the same float.
nlohmann::ordered_json to_json(const query_answer &answer, size_t query_index);

// A float as the JSON number whose shortest decimal form is the float's
// own (0.3f prints as 0.3, not 0.30000001192092896).
double json_number(float value);

}  // namespace facevec::api
