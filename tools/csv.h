// CSV manifests shared by the commands that read them (import, enroll).
//
// csv_reader reads RFC 4180 records one at a time: fields separated by
// commas, records by CRLF or LF; a field in double quotes may hold
// commas, line breaks and quotes (written twice). Bytes pass through
// unchanged (labels are UTF-8; a leading UTF-8 byte order mark is
// skipped). manifest_reader adds named columns on top: an optional header
// record naming them, in any order.
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"

namespace facevec::cli {

class csv_reader {
  public:
    // Errors: not_found / io_error naming the file.
    static result<std::unique_ptr<csv_reader>> open(const std::string &path);
    ~csv_reader();

    // Reads the next record into fields; false at the end of the file.
    // corruption, naming the file and line, for a quoted field that is
    // never closed or a character after a closing quote; io_error when
    // reading fails.
    result<bool> next(std::vector<std::string> &fields);

    // The 1-based line where the last record read starts.
    uint64_t line() const { return record_line_; }
    const std::string &path() const { return path_; }

  private:
    csv_reader(std::string path, std::FILE *f);
    int get();

    std::string path_;
    std::FILE *file_ = nullptr;
    uint64_t line_ = 1;
    uint64_t record_line_ = 0;
};

// A CSV file of named columns. The first record is a header when a field
// in it is one of the known column names; the columns are then found by
// name. Otherwise the file has no header and its columns are
// `headerless`, in that order. Blank lines are skipped.
class manifest_reader {
  public:
    // known: every column name accepted; required: those that must be
    // there; headerless: the columns of a file without a header.
    // Errors: those of csv_reader::open and next, and invalid_argument
    // for a header with an unknown column, a repeated one, or without a
    // required one ("m.csv: missing column 'person' (header: path,row)").
    static result<std::unique_ptr<manifest_reader>> open(
        const std::string &path, std::vector<std::string> known,
        const std::vector<std::string> &required,
        const std::vector<std::string> &headerless);

    // The next record as values[i] for known[i] ("" for a column the
    // file does not have); false at the end. invalid_argument, naming the
    // file and line, when the record has another number of fields than
    // the header.
    result<bool> next(std::vector<std::string> &values);

    // "FILE line N" of the last record read, for messages.
    std::string where() const;

    // A path from the manifest: relative ones are relative to the
    // manifest's folder.
    std::string resolve(const std::string &path) const;

    const std::string &path() const { return csv_->path(); }

  private:
    explicit manifest_reader(std::unique_ptr<csv_reader> csv);
    status read_header(const std::vector<std::string> &required,
                       const std::vector<std::string> &headerless);

    std::unique_ptr<csv_reader> csv_;
    std::vector<std::string> known_;
    std::vector<size_t> column_of_field_;  // field position -> known index
    std::vector<std::string> pending_;     // a first record that is data
    bool has_pending_ = false;
    std::vector<std::string> fields_;
};

}  // namespace facevec::cli
