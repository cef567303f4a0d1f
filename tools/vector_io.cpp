#include "tools/vector_io.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <limits>
#include <regex>

namespace facevec::cli {
namespace {

constexpr char kNpyMagic[] = "\x93NUMPY";
constexpr size_t kNpyMagicBytes = 6;
// magic, major and minor version, then a 2-byte (v1) or 4-byte (v2, v3)
// little-endian header length.
constexpr size_t kNpyPreambleV1 = kNpyMagicBytes + 2 + 2;
constexpr size_t kNpyPreambleV2 = kNpyMagicBytes + 2 + 4;
constexpr size_t kNpyMaxHeaderBytes = 1 << 20;
// The header this program writes: preamble plus the padded dict, a
// multiple of 64 bytes with room for any 64-bit shape.
constexpr size_t kNpyWrittenHeaderBytes = 128;
constexpr size_t kFloatBytes = sizeof(float);
constexpr size_t kFvecsDimBytes = sizeof(int32_t);
constexpr uint64_t kFnvOffset = 14695981039346656037ull;
constexpr uint64_t kFnvPrime = 1099511628211ull;

status open_error(const std::string &path) {
    int err = errno;
    std::string why = std::strerror(err);
    if (err == ENOENT)
        return not_found(path + ": " + why);
    return io_error(path + ": " + why);
}

uint64_t file_size(std::FILE *f) {
    fseeko(f, 0, SEEK_END);
    uint64_t n = static_cast<uint64_t>(ftello(f));
    fseeko(f, 0, SEEK_SET);
    return n;
}

uint32_t read_le32(const unsigned char *p) {
    return uint32_t(p[0]) | uint32_t(p[1]) << 8 | uint32_t(p[2]) << 16 |
           uint32_t(p[3]) << 24;
}

// The value of 'key' in a .npy header dict, as written by numpy: the raw
// text up to the next top-level comma or closing brace.
std::optional<std::string> npy_field(const std::string &header,
                                     const std::string &key) {
    std::regex re("['\"]" + key + "['\"]\\s*:\\s*(\\([^)]*\\)|'[^']*'|" +
                  "\"[^\"]*\"|[A-Za-z]+)");
    std::smatch m;
    if (!std::regex_search(header, m, re))
        return std::nullopt;
    return m[1].str();
}

}  // namespace

vector_reader::vector_reader(std::string path, std::FILE *f, format fmt)
    : path_(std::move(path)), file_(f), format_(fmt) {}

vector_reader::~vector_reader() {
    if (file_ != nullptr)
        std::fclose(file_);
}

result<std::unique_ptr<vector_reader>> vector_reader::open(
    const std::string &path) {
    std::string ext = std::filesystem::path(path).extension().string();
    format fmt;
    if (ext == ".npy") {
        fmt = format::npy;
    } else if (ext == ".fvecs") {
        fmt = format::fvecs;
    } else {
        return status(error_code::unsupported,
                      path + ": unknown vector file type '" + ext +
                          "' (expected .npy or .fvecs)");
    }
    if (std::filesystem::is_directory(path)) {
        return io_error(path + ": is a directory");
    }
    std::FILE *f = std::fopen(path.c_str(), "rb");
    if (f == nullptr)
        return open_error(path);

    std::unique_ptr<vector_reader> r(new vector_reader(path, f, fmt));
    r->file_bytes_ = file_size(f);
    status st =
        fmt == format::npy ? r->parse_npy_header() : r->parse_fvecs_layout();
    if (!st)
        return st;
    FACEVEC_RETURN_IF_ERROR(r->rewind());
    return r;
}

status vector_reader::parse_npy_header() {
    // Preamble: magic and version, then the header length.
    unsigned char pre[kNpyPreambleV2] = {};
    size_t got = std::fread(pre, 1, sizeof(pre), file_);
    if (got < kNpyPreambleV1 ||
        std::memcmp(pre, kNpyMagic, kNpyMagicBytes) != 0) {
        return corruption(path_ + ": not a .npy file (bad magic)");
    }
    uint8_t major = pre[kNpyMagicBytes];
    size_t preamble = major == 1 ? kNpyPreambleV1 : kNpyPreambleV2;
    if (major < 1 || major > 3 || got < preamble) {
        return corruption(path_ + ": unknown .npy version " +
                          std::to_string(major));
    }
    size_t header_bytes = major == 1 ? size_t(pre[8]) | size_t(pre[9]) << 8
                                     : size_t(read_le32(pre + 8));
    if (header_bytes > kNpyMaxHeaderBytes ||
        preamble + header_bytes > file_bytes_) {
        return corruption(path_ + ": truncated .npy header (file has " +
                          std::to_string(file_bytes_) + " bytes)");
    }
    std::string header(header_bytes, '\0');
    fseeko(file_, off_t(preamble), SEEK_SET);
    if (std::fread(header.data(), 1, header_bytes, file_) != header_bytes) {
        return io_error(path_ + ": cannot read the .npy header");
    }
    data_offset_ = preamble + header_bytes;

    // The dict: dtype, order and a 2-D shape.
    auto descr = npy_field(header, "descr");
    auto fortran = npy_field(header, "fortran_order");
    auto shape = npy_field(header, "shape");
    if (!descr || !fortran || !shape) {
        return corruption(path_ + ": .npy header lacks descr, " +
                          "fortran_order or shape: " + header);
    }
    std::string dtype = descr->substr(1, descr->size() - 2);
    if (dtype != "<f4") {
        return status(error_code::unsupported,
                      path_ + ": dtype " + dtype +
                          " is not supported; convert to float32 ('<f4')");
    }
    if (*fortran != "False") {
        return status(error_code::unsupported,
                      path_ + ": Fortran-ordered arrays are not supported; " +
                          "save a C-ordered array");
    }
    std::smatch m;
    std::regex two_d("^\\(\\s*(\\d+)\\s*,\\s*(\\d+)\\s*,?\\s*\\)$");
    if (!std::regex_match(*shape, m, two_d)) {
        return status(
            error_code::unsupported,
            path_ + ": shape " + *shape + " is not 2-D (n vectors x d values)");
    }
    rows_ = std::stoull(m[1].str());
    uint64_t dim = std::stoull(m[2].str());
    if (dim == 0 || dim > kMaxVectorDim) {
        return status(error_code::unsupported,
                      path_ + ": dim " + std::to_string(dim) +
                          " is out of range 1.." +
                          std::to_string(kMaxVectorDim));
    }
    dim_ = uint32_t(dim);

    // The data must be all there before a row is imported.
    uint64_t row_bytes = uint64_t(dim_) * kFloatBytes;
    if (rows_ > (file_bytes_ - data_offset_) / row_bytes) {
        return truncated_at((file_bytes_ - data_offset_) / row_bytes);
    }
    return status::ok();
}

status vector_reader::parse_fvecs_layout() {
    data_offset_ = 0;
    if (file_bytes_ == 0)
        return status::ok();
    unsigned char d[kFvecsDimBytes];
    if (std::fread(d, 1, kFvecsDimBytes, file_) != kFvecsDimBytes) {
        return corruption(
            path_ + ": truncated at row 0 (offset 0): " + "the file has " +
            std::to_string(file_bytes_) + " bytes, too few for a dimension");
    }
    uint32_t dim = read_le32(d);
    if (dim == 0 || dim > kMaxVectorDim) {
        return corruption(path_ + ": row 0 (offset 0): dimension " +
                          std::to_string(int32_t(dim)) +
                          " is out of range 1.." +
                          std::to_string(kMaxVectorDim));
    }
    dim_ = dim;
    uint64_t record = kFvecsDimBytes + uint64_t(dim_) * kFloatBytes;
    rows_ = file_bytes_ / record;
    if (file_bytes_ % record != 0)
        return fvecs_size_error();
    return status::ok();
}

status vector_reader::fvecs_size_error() {
    uint64_t record = kFvecsDimBytes + uint64_t(dim_) * kFloatBytes;
    for (uint64_t row = 1; row * record + kFvecsDimBytes <= file_bytes_;
         ++row) {
        unsigned char d[kFvecsDimBytes];
        if (fseeko(file_, off_t(row * record), SEEK_SET) != 0 ||
            std::fread(d, 1, kFvecsDimBytes, file_) != kFvecsDimBytes) {
            break;
        }
        uint32_t dim = read_le32(d);
        if (dim != dim_) {
            return corruption(path_ + ": row " + std::to_string(row) +
                              " (offset " + std::to_string(row * record) +
                              "): dimension " + std::to_string(int32_t(dim)) +
                              " differs from row 0's " + std::to_string(dim_));
        }
    }
    return truncated_at(rows_);
}

status vector_reader::truncated_at(uint64_t row) const {
    uint64_t record = uint64_t(dim_) * kFloatBytes +
                      (format_ == format::fvecs ? kFvecsDimBytes : 0);
    uint64_t offset = data_offset_ + row * record;
    std::string expected = format_ == format::npy
                               ? "; the header says " + std::to_string(rows_) +
                                     " rows of " + std::to_string(dim_) +
                                     " floats"
                               : "";
    return corruption(path_ + ": truncated at row " + std::to_string(row) +
                      " (offset " + std::to_string(offset) + "): the file " +
                      "ends at offset " + std::to_string(file_bytes_) +
                      expected);
}

status vector_reader::rewind() {
    return seek(0);
}

status vector_reader::seek(uint64_t row) {
    if (row > rows_) {
        return invalid_argument(path_ + ": row " + std::to_string(row) +
                                " is past the last row (the file has " +
                                std::to_string(rows_) + " rows)");
    }
    uint64_t record = uint64_t(dim_) * kFloatBytes +
                      (format_ == format::fvecs ? kFvecsDimBytes : 0);
    if (fseeko(file_, off_t(data_offset_ + row * record), SEEK_SET) != 0) {
        return io_error(path_ + ": cannot seek: " + std::strerror(errno));
    }
    next_row_ = row;
    return status::ok();
}

result<size_t> vector_reader::read(size_t max_rows, std::vector<float> &out) {
    size_t n = size_t(std::min<uint64_t>(max_rows, rows_ - next_row_));
    out.resize(n * dim_);
    if (n == 0)
        return size_t{0};
    if (format_ == format::fvecs)
        return read_fvecs(n, out);

    size_t got = std::fread(out.data(), kFloatBytes * dim_, n, file_);
    if (got != n)
        return truncated_at(next_row_ + got);
    next_row_ += n;
    return n;
}

result<size_t> vector_reader::read_fvecs(size_t n, std::vector<float> &out) {
    size_t record = kFvecsDimBytes + size_t(dim_) * kFloatBytes;
    buffer_.resize(n * record);
    size_t got = std::fread(buffer_.data(), record, n, file_);
    if (got != n)
        return truncated_at(next_row_ + got);

    for (size_t i = 0; i < n; ++i) {
        const char *rec = buffer_.data() + i * record;
        uint32_t d = read_le32(reinterpret_cast<const unsigned char *>(rec));
        if (d != dim_) {
            uint64_t row = next_row_ + i;
            return corruption(path_ + ": row " + std::to_string(row) +
                              " (offset " + std::to_string(row * record) +
                              "): dimension " + std::to_string(int32_t(d)) +
                              " differs from row 0's " + std::to_string(dim_));
        }
        std::memcpy(out.data() + i * dim_, rec + kFvecsDimBytes,
                    size_t(dim_) * kFloatBytes);
    }
    next_row_ += n;
    return n;
}

npy_writer::npy_writer(std::string path, std::FILE *f, uint32_t dim)
    : path_(std::move(path)), file_(f), dim_(dim) {}

npy_writer::~npy_writer() {
    if (file_ != nullptr)
        std::fclose(file_);
}

result<std::unique_ptr<npy_writer>> npy_writer::create(const std::string &path,
                                                       uint32_t dim) {
    std::FILE *f = std::fopen(path.c_str(), "wb");
    if (f == nullptr)
        return open_error(path);
    std::unique_ptr<npy_writer> w(new npy_writer(path, f, dim));
    FACEVEC_RETURN_IF_ERROR(w->write_header());
    return w;
}

status npy_writer::write_header() {
    std::string dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (" +
                       std::to_string(rows_) + ", " + std::to_string(dim_) +
                       "), }";
    size_t dict_bytes = kNpyWrittenHeaderBytes - kNpyPreambleV1;
    FACEVEC_ASSERT(dict.size() < dict_bytes, "npy header too long: " + dict);
    dict.resize(dict_bytes - 1, ' ');
    dict += '\n';

    std::string header(kNpyMagic, kNpyMagicBytes);
    header += char(1);
    header += char(0);
    header += char(dict_bytes & 0xff);
    header += char(dict_bytes >> 8);
    header += dict;
    if (fseeko(file_, 0, SEEK_SET) != 0 ||
        std::fwrite(header.data(), 1, header.size(), file_) != header.size()) {
        return io_error(path_ + ": cannot write: " + std::strerror(errno));
    }
    return status::ok();
}

status npy_writer::write_row(const float *row) {
    if (std::fwrite(row, kFloatBytes, dim_, file_) != dim_) {
        return io_error(path_ + ": cannot write row " + std::to_string(rows_) +
                        ": " + std::strerror(errno));
    }
    ++rows_;
    return status::ok();
}

status npy_writer::finish() {
    FACEVEC_RETURN_IF_ERROR(write_header());
    int rc = std::fclose(file_);
    file_ = nullptr;
    if (rc != 0) {
        return io_error(path_ + ": cannot close: " + std::strerror(errno));
    }
    return status::ok();
}

labels_reader::labels_reader(std::string path, std::FILE *f)
    : path_(std::move(path)), file_(f) {}

labels_reader::~labels_reader() {
    if (file_ != nullptr)
        std::fclose(file_);
}

result<std::unique_ptr<labels_reader>> labels_reader::open(
    const std::string &path) {
    if (std::filesystem::is_directory(path)) {
        return io_error(path + ": is a directory");
    }
    std::FILE *f = std::fopen(path.c_str(), "rb");
    if (f == nullptr)
        return open_error(path);
    return std::unique_ptr<labels_reader>(new labels_reader(path, f));
}

result<uint64_t> labels_reader::count_lines(const std::string &path) {
    auto r = open(path);
    if (!r)
        return r.error();
    uint64_t lines = 0;
    int last = '\n';
    for (int c; (c = std::fgetc(r.value()->file_)) != EOF; last = c) {
        if (c == '\n')
            ++lines;
    }
    if (last != '\n')
        ++lines;
    return lines;
}

std::optional<std::string> labels_reader::next() {
    std::string line;
    int c = std::fgetc(file_);
    if (c == EOF)
        return std::nullopt;
    for (; c != EOF && c != '\n'; c = std::fgetc(file_)) {
        line += char(c);
    }
    if (!line.empty() && line.back() == '\r')
        line.pop_back();
    // Editors on some systems start UTF-8 text with a byte order mark.
    constexpr std::string_view kBom = "\xef\xbb\xbf";
    if (first_line_ && line.starts_with(kBom))
        line.erase(0, kBom.size());
    first_line_ = false;
    return line;
}

status labels_reader::rewind() {
    if (fseeko(file_, 0, SEEK_SET) != 0) {
        return io_error(path_ + ": cannot seek: " + std::strerror(errno));
    }
    first_line_ = true;
    return status::ok();
}

std::string content_hash(const float *v, size_t n) {
    uint64_t h = kFnvOffset;
    const auto *bytes = reinterpret_cast<const unsigned char *>(v);
    for (size_t i = 0; i < n * kFloatBytes; ++i) {
        h = (h ^ bytes[i]) * kFnvPrime;
    }
    char hex[17];
    std::snprintf(hex, sizeof(hex), "%016llx",
                  static_cast<unsigned long long>(h));
    return hex;
}

}  // namespace facevec::cli
