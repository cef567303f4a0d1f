// Status and result: how facevec reports user and input errors.
//
// A status is ok, or an error code with a message that names the item and
// the reason ("labels.txt line 7: label is empty"). Broken invariants are
// not statuses: they are assertions (FACEVEC_ASSERT below).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <string>
#include <utility>
#include <variant>

namespace facevec {

enum class error_code {
    ok = 0,
    invalid_argument,    // bad input from the caller: NaN, wrong dim, k <= 0
    not_found,           // unknown person, face, file or database
    already_exists,      // create over an existing database
    mismatch,            // database made with another dim, model or schema
    corruption,          // unreadable or inconsistent stored data
    io_error,            // the file system failed
    in_use,              // the database is open in another process
    unsupported,         // a format or feature facevec does not handle
    resource_exhausted,  // over a documented limit (pixels, body size)
    internal,            // a library failed in a way we did not expect
};

// The stable lower-case name of a code, e.g. "invalid_argument".
const char *error_code_name(error_code code);

class [[nodiscard]] status {
  public:
    status() = default;
    status(error_code code, std::string message)
        : code_(code), message_(std::move(message)) {}

    static status ok() { return {}; }

    bool is_ok() const { return code_ == error_code::ok; }
    explicit operator bool() const { return is_ok(); }
    error_code code() const { return code_; }
    const std::string &message() const { return message_; }

    // "invalid_argument: labels.txt line 7: label is empty".
    std::string to_string() const;

    // Prefixes the message with context, e.g. the file being read.
    status with_context(const std::string &context) const;

  private:
    error_code code_ = error_code::ok;
    std::string message_;
};

inline status invalid_argument(std::string m) {
    return {error_code::invalid_argument, std::move(m)};
}
inline status not_found(std::string m) {
    return {error_code::not_found, std::move(m)};
}
inline status mismatch(std::string m) {
    return {error_code::mismatch, std::move(m)};
}
inline status corruption(std::string m) {
    return {error_code::corruption, std::move(m)};
}
inline status io_error(std::string m) {
    return {error_code::io_error, std::move(m)};
}

// A value of T, or the status saying why there is none.
template <typename T>
class [[nodiscard]] result {
  public:
    result(T value) : v_(std::move(value)) {}
    result(status error) : v_(std::move(error)) {
        if (std::get<status>(v_).is_ok()) {
            v_ = status(error_code::internal, "ok status given as an error");
        }
    }

    bool is_ok() const { return std::holds_alternative<T>(v_); }
    explicit operator bool() const { return is_ok(); }

    // REQUIRES: is_ok().
    T &value() & { return std::get<T>(v_); }
    const T &value() const & { return std::get<T>(v_); }
    T &&value() && { return std::get<T>(std::move(v_)); }
    T *operator->() { return &value(); }
    const T *operator->() const { return &value(); }
    T &operator*() & { return value(); }

    // ok when a value is held.
    status error() const {
        return is_ok() ? status::ok() : std::get<status>(v_);
    }

  private:
    std::variant<T, status> v_;
};

namespace internal {
[[noreturn]] void assert_failed(const char *expr, const char *file, int line,
                                const std::string &detail);
}  // namespace internal

}  // namespace facevec

// Checks an invariant in every build type; aborts with the expression,
// place and detail when it does not hold. Not for user errors.
#define FACEVEC_ASSERT(cond, detail)                                      \
    do {                                                                  \
        if (!(cond)) {                                                    \
            ::facevec::internal::assert_failed(#cond, __FILE__, __LINE__, \
                                               (detail));                 \
        }                                                                 \
    } while (0)

// Returns the status from the enclosing function when it is an error.
#define FACEVEC_RETURN_IF_ERROR(expr)           \
    do {                                        \
        ::facevec::status facevec_st_ = (expr); \
        if (!facevec_st_.is_ok()) {             \
            return facevec_st_;                 \
        }                                       \
    } while (0)
