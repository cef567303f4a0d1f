#include "api/json.h"

#include <charconv>
#include <cstdlib>
#include <string>

namespace facevec::api {
namespace {

// Enough for the shortest round-trip form of any float.
constexpr size_t kFloatChars = 32;

}  // namespace

double json_number(float value) {
    char text[kFloatChars];
    auto [end, ec] = std::to_chars(text, text + kFloatChars, value);
    FACEVEC_ASSERT(ec == std::errc(), "to_chars(float) cannot overflow");
    *end = '\0';
    return std::strtod(text, nullptr);
}

nlohmann::ordered_json to_json(const query_answer &answer, size_t query_index) {
    nlohmann::ordered_json top = nlohmann::ordered_json::array();
    for (const match &m : answer.top) {
        top.push_back({{"person", m.person},
                       {"face", m.face},
                       {"distance", json_number(m.distance)}});
    }

    nlohmann::ordered_json out;
    out["query"] = query_index;
    out["person"] = answer.person ? nlohmann::ordered_json(*answer.person)
                                  : nlohmann::ordered_json(nullptr);
    out["distance"] = json_number(answer.distance);
    out["top"] = std::move(top);
    return out;
}

}  // namespace facevec::api
