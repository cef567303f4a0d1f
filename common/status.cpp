#include "common/status.h"

namespace facevec {

const char *error_code_name(error_code code) {
    switch (code) {
        case error_code::ok:
            return "ok";
        case error_code::invalid_argument:
            return "invalid_argument";
        case error_code::not_found:
            return "not_found";
        case error_code::already_exists:
            return "already_exists";
        case error_code::mismatch:
            return "mismatch";
        case error_code::corruption:
            return "corruption";
        case error_code::io_error:
            return "io_error";
        case error_code::in_use:
            return "in_use";
        case error_code::unsupported:
            return "unsupported";
        case error_code::resource_exhausted:
            return "resource_exhausted";
        case error_code::internal:
            return "internal";
    }
    return "unknown";
}

std::string status::to_string() const {
    if (is_ok())
        return "ok";
    return std::string(error_code_name(code_)) + ": " + message_;
}

status status::with_context(const std::string &context) const {
    if (is_ok())
        return *this;
    return {code_, context + ": " + message_};
}

namespace internal {

void assert_failed(const char *expr, const char *file, int line,
                   const std::string &detail) {
    std::fprintf(stderr, "facevec: invariant '%s' failed at %s:%d: %s\n", expr,
                 file, line, detail.c_str());
    std::abort();
}

}  // namespace internal
}  // namespace facevec
