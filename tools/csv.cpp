#include "tools/csv.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

namespace facevec::cli {
namespace {

constexpr char kQuote = '"';
constexpr char kComma = ',';
constexpr char kReturn = '\r';
constexpr char kNewline = '\n';
constexpr unsigned char kBom[] = {0xef, 0xbb, 0xbf};

std::string joined(const std::vector<std::string> &names) {
    std::string out;
    for (const std::string &n : names)
        out += (out.empty() ? "" : ",") + n;
    return out;
}

}  // namespace

csv_reader::csv_reader(std::string path, std::FILE *f)
    : path_(std::move(path)), file_(f) {}

csv_reader::~csv_reader() {
    std::fclose(file_);
}

result<std::unique_ptr<csv_reader>> csv_reader::open(const std::string &path) {
    std::FILE *f = std::fopen(path.c_str(), "rb");
    if (f == nullptr) {
        int err = errno;
        std::string message = path + ": cannot open: " + std::strerror(err);
        return err == ENOENT ? not_found(message) : io_error(message);
    }
    unsigned char head[sizeof kBom] = {};
    size_t got = std::fread(head, 1, sizeof head, f);
    if (got != sizeof head || std::memcmp(head, kBom, sizeof kBom) != 0)
        std::rewind(f);
    return std::unique_ptr<csv_reader>(new csv_reader(path, f));
}

int csv_reader::get() {
    int c = getc_unlocked(file_);
    if (c == kNewline)
        ++line_;
    return c;
}

result<bool> csv_reader::next(std::vector<std::string> &fields) {
    fields.clear();
    int c = get();
    if (c == EOF) {
        if (std::ferror(file_) != 0)
            return io_error(path_ + ": read failed: " + std::strerror(errno));
        return false;
    }
    record_line_ = line_ - (c == kNewline ? 1 : 0);

    for (;;) {
        std::string field;
        if (c == kQuote) {
            // A quoted field ends at a quote not followed by another.
            for (;;) {
                c = get();
                if (c == EOF) {
                    return corruption(path_ + " line " +
                                      std::to_string(record_line_) +
                                      ": a quoted field is never closed");
                }
                if (c == kQuote) {
                    c = get();
                    if (c != kQuote)
                        break;
                }
                field.push_back(static_cast<char>(c));
            }
            if (c != kComma && c != kNewline && c != kReturn && c != EOF) {
                return corruption(path_ + " line " + std::to_string(line_) +
                                  ": unexpected character after a closing "
                                  "quote (quote the whole field and write "
                                  "quotes inside it twice)");
            }
        } else {
            while (c != kComma && c != kNewline && c != kReturn && c != EOF) {
                field.push_back(static_cast<char>(c));
                c = get();
            }
        }
        fields.push_back(std::move(field));

        if (c == kComma) {
            c = get();
            continue;
        }
        if (c == kReturn) {
            int after = get();
            if (after != kNewline && after != EOF)
                std::ungetc(after, file_);
        }
        return true;
    }
}

manifest_reader::manifest_reader(std::unique_ptr<csv_reader> csv)
    : csv_(std::move(csv)) {}

result<std::unique_ptr<manifest_reader>> manifest_reader::open(
    const std::string &path, std::vector<std::string> known,
    const std::vector<std::string> &required,
    const std::vector<std::string> &headerless) {
    auto csv = csv_reader::open(path);
    if (!csv)
        return csv.error();
    std::unique_ptr<manifest_reader> m(
        new manifest_reader(std::move(csv).value()));
    m->known_ = std::move(known);
    FACEVEC_RETURN_IF_ERROR(m->read_header(required, headerless));
    return m;
}

status manifest_reader::read_header(
    const std::vector<std::string> &required,
    const std::vector<std::string> &headerless) {
    auto known_index = [&](const std::string &name) {
        return static_cast<size_t>(
            std::find(known_.begin(), known_.end(), name) - known_.begin());
    };

    // The first non-blank record: a header when it names a column.
    std::vector<std::string> first;
    for (;;) {
        auto got = csv_->next(first);
        if (!got)
            return got.error();
        if (!*got || !(first.size() == 1 && first[0].empty()))
            break;
    }
    bool header = std::any_of(first.begin(), first.end(), [&](auto &f) {
        return known_index(f) < known_.size();
    });
    std::vector<std::string> names = header ? first : headerless;
    if (!header && !first.empty()) {
        pending_ = std::move(first);
        has_pending_ = true;
    }

    for (const std::string &name : names) {
        if (known_index(name) == known_.size()) {
            return invalid_argument(path() + " line " +
                                    std::to_string(csv_->line()) +
                                    ": unknown column '" + name +
                                    "' (known: " + joined(known_) + ")");
        }
        if (std::count(names.begin(), names.end(), name) > 1) {
            return invalid_argument(path() + " line " +
                                    std::to_string(csv_->line()) +
                                    ": column '" + name + "' appears twice");
        }
        column_of_field_.push_back(known_index(name));
    }
    for (const std::string &name : required) {
        if (std::find(names.begin(), names.end(), name) == names.end()) {
            return invalid_argument(path() + ": missing column '" + name +
                                    "' (header: " + joined(names) + ")");
        }
    }
    return status::ok();
}

result<bool> manifest_reader::next(std::vector<std::string> &values) {
    for (;;) {
        if (has_pending_) {
            fields_ = std::move(pending_);
            has_pending_ = false;
        } else {
            auto got = csv_->next(fields_);
            if (!got)
                return got.error();
            if (!*got)
                return false;
        }
        if (fields_.size() == 1 && fields_[0].empty())
            continue;  // a blank line
        break;
    }
    if (fields_.size() != column_of_field_.size()) {
        return invalid_argument(
            where() + ": " + std::to_string(fields_.size()) +
            " fields, expected " + std::to_string(column_of_field_.size()));
    }
    values.assign(known_.size(), std::string());
    for (size_t i = 0; i < fields_.size(); ++i)
        values[column_of_field_[i]] = std::move(fields_[i]);
    return true;
}

std::string manifest_reader::where() const {
    return path() + " line " + std::to_string(csv_->line());
}

std::string manifest_reader::resolve(const std::string &p) const {
    std::filesystem::path file = p;
    if (file.is_relative())
        file = std::filesystem::path(path()).parent_path() / file;
    return file.string();
}

}  // namespace facevec::cli
