// Vector and label files for the command line: .npy and .fvecs readers
// that stream batch by batch, a .npy writer, and one-label-per-line text.
//
// Every error names the file and, where it applies, the row and the byte
// offset ("a.npy: truncated at row 12 (offset 6272): ...").
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/status.h"

namespace facevec::cli {

// The largest dim a vector file or a new database may have.
inline constexpr uint32_t kMaxVectorDim = 1 << 16;

// n x d float32 vectors read from a .npy (dtype '<f4', C order, 2-D) or an
// .fvecs file (per row: int32 d, then d float32, little-endian). The
// format is chosen by the extension. The whole file's size is checked on
// open, so a truncated file fails before any row is read.
class vector_reader {
  public:
    // Errors: not_found / io_error (cannot open), unsupported (another
    // extension, dtype, order or rank), corruption (bad header,
    // truncated, inconsistent fvecs dims).
    static result<std::unique_ptr<vector_reader>> open(const std::string &path);
    ~vector_reader();

    const std::string &path() const { return path_; }
    uint64_t rows() const { return rows_; }
    uint32_t dim() const { return dim_; }
    uint64_t next_row() const { return next_row_; }

    // Reads up to max_rows rows into out (resized to rows x dim floats,
    // row-major) and returns how many were read: 0 at the end.
    result<size_t> read(size_t max_rows, std::vector<float> &out);

    // Goes back to the first row.
    status rewind();

    // Makes `row` the next row read (rows() = the end). invalid_argument,
    // naming the file and its row count, past the end.
    status seek(uint64_t row);

  private:
    enum class format { npy, fvecs };
    vector_reader(std::string path, std::FILE *f, format fmt);
    status parse_npy_header();
    status parse_fvecs_layout();
    result<size_t> read_fvecs(size_t rows, std::vector<float> &out);
    status truncated_at(uint64_t row) const;
    // The error for an .fvecs file whose size is not a whole number of
    // records: the first row whose dimension differs from row 0's, or
    // else a truncated last row.
    status fvecs_size_error();

    std::string path_;
    std::FILE *file_ = nullptr;
    format format_;
    uint64_t file_bytes_ = 0;
    uint64_t data_offset_ = 0;  // where row 0 starts
    uint64_t rows_ = 0;
    uint32_t dim_ = 0;
    uint64_t next_row_ = 0;
    std::vector<char> buffer_;
};

// Writes an n x d float32 .npy file whose row count is known only at the
// end: the header is written with room to spare and rewritten by finish.
class npy_writer {
  public:
    static result<std::unique_ptr<npy_writer>> create(const std::string &path,
                                                      uint32_t dim);
    ~npy_writer();

    // Appends one row of dim floats.
    status write_row(const float *row);

    // Writes the final header and closes the file.
    status finish();

  private:
    npy_writer(std::string path, std::FILE *f, uint32_t dim);
    status write_header();

    std::string path_;
    std::FILE *file_ = nullptr;
    uint32_t dim_;
    uint64_t rows_ = 0;
};

// A text file of one label per line ('\n', an optional '\r' before it is
// dropped; a UTF-8 byte order mark before the first line too), read line
// by line.
class labels_reader {
  public:
    static result<std::unique_ptr<labels_reader>> open(const std::string &path);
    ~labels_reader();

    // The number of lines: a final line without '\n' counts too.
    static result<uint64_t> count_lines(const std::string &path);

    // The next line, or nullopt at the end.
    std::optional<std::string> next();
    status rewind();

  private:
    labels_reader(std::string path, std::FILE *f);
    std::string path_;
    std::FILE *file_ = nullptr;
    bool first_line_ = true;
};

// A stable 64-bit FNV-1a hash of n floats' bytes, as 16 hex digits: the
// content hash that lets an interrupted import resume.
std::string content_hash(const float *v, size_t n);

}  // namespace facevec::cli
