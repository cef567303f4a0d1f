#include "train/features.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>

#include <nlohmann/json.hpp>

#include "common/log.h"

namespace facevec::train {
namespace {

constexpr char kNpyMagic[] = "\x93NUMPY";
constexpr size_t kNpyMagicSize = sizeof(kNpyMagic) - 1;
constexpr int kNpyVersionOne = 1;
constexpr int kNpyVersionTwo = 2;
constexpr size_t kNpyAlign = 64;
constexpr char kCacheMagic[] = "FVFEAT1\n";
constexpr size_t kCacheMagicSize = sizeof(kCacheMagic) - 1;
constexpr size_t kLengthBytes = 8;
constexpr int kByteBits = 8;
constexpr uint64_t kMaxHeaderBytes = 1 << 20;
constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;
constexpr unsigned char kSeparator = 0;

uint64_t read_le(const unsigned char *p, size_t bytes) {
    uint64_t v = 0;
    for (size_t i = 0; i < bytes; ++i) {
        v |= static_cast<uint64_t>(p[i]) << (kByteBits * i);
    }
    return v;
}

void write_le(std::ostream &out, uint64_t v, size_t bytes) {
    for (size_t i = 0; i < bytes; ++i) {
        out.put(static_cast<char>((v >> (kByteBits * i)) & 0xff));
    }
}

bool finite_row(const float *r, size_t n) {
    for (size_t i = 0; i < n; ++i) {
        if (!std::isfinite(r[i]))
            return false;
    }
    return true;
}

status unsupported_npy(std::string m) {
    return {error_code::unsupported, std::move(m)};
}

// Reads exactly n bytes; false on a short read.
bool read_bytes(std::istream &in, void *dst, size_t n) {
    return static_cast<bool>(
        in.read(static_cast<char *>(dst), static_cast<std::streamsize>(n)));
}

}  // namespace

result<feature_set> make_feature_set(feature_matrix m,
                                     const std::vector<std::string> &names) {
    if (m.rows == 0 || m.cols == 0) {
        return invalid_argument("features: the matrix is empty");
    }
    if (names.size() != m.rows) {
        return invalid_argument("features: " + std::to_string(m.rows) +
                                " rows but " + std::to_string(names.size()) +
                                " labels");
    }
    feature_set s;
    std::map<std::string, int> ids;
    for (size_t i = 0; i < m.rows; ++i) {
        if (names[i].empty()) {
            return invalid_argument("features: row " + std::to_string(i) +
                                    " has an empty label");
        }
        if (!finite_row(m.data.data() + i * m.cols, m.cols)) {
            return invalid_argument("features: row " + std::to_string(i) +
                                    " holds NaN or Inf");
        }
        auto [it, added] =
            ids.emplace(names[i], static_cast<int>(s.persons.size()));
        if (added)
            s.persons.push_back(names[i]);
        s.label.push_back(it->second);
    }
    s.features = std::move(m);
    return s;
}

feature_set select_persons(const feature_set &set,
                           const std::vector<std::string> &persons) {
    std::set<std::string> keep(persons.begin(), persons.end());
    feature_set out;
    out.features.cols = set.features.cols;
    std::map<int, int> remap;
    for (size_t i = 0; i < set.features.rows; ++i) {
        const std::string &name = set.persons[set.label[i]];
        if (keep.count(name) == 0)
            continue;
        auto [it, added] =
            remap.emplace(set.label[i], static_cast<int>(out.persons.size()));
        if (added)
            out.persons.push_back(name);
        out.label.push_back(it->second);
        const float *row = set.features.data.data() + i * set.features.cols;
        out.features.data.insert(out.features.data.end(), row,
                                 row + set.features.cols);
        ++out.features.rows;
    }
    return out;
}

result<feature_matrix> read_npy(const std::string &path) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return not_found(path + ": cannot open the .npy file");

    // Magic, version, header length.
    unsigned char pre[kNpyMagicSize + 2];
    if (!read_bytes(in, pre, sizeof(pre)) ||
        std::memcmp(pre, kNpyMagic, kNpyMagicSize) != 0) {
        return corruption(path + ": not a .npy file (bad magic)");
    }
    const int major = pre[kNpyMagicSize];
    if (major != kNpyVersionOne && major != kNpyVersionTwo) {
        return unsupported_npy(path + ": .npy version " +
                               std::to_string(major) + " is unsupported");
    }
    const size_t len_bytes = major == kNpyVersionOne ? 2 : 4;
    unsigned char len[4];
    if (!read_bytes(in, len, len_bytes)) {
        return corruption(path + ": truncated .npy header");
    }
    std::string header(read_le(len, len_bytes), '\0');
    if (!read_bytes(in, header.data(), header.size())) {
        return corruption(path + ": truncated .npy header");
    }

    // The header is a Python dict literal.
    if (header.find("'descr': '<f4'") == std::string::npos) {
        return unsupported_npy(path +
                               ": only little-endian float32 "
                               "('<f4') .npy is supported");
    }
    if (header.find("'fortran_order': False") == std::string::npos) {
        return unsupported_npy(path +
                               ": Fortran-order .npy is "
                               "unsupported");
    }
    std::smatch sm;
    static const std::regex kShape(R"('shape': \((\d+), (\d+)\))");
    if (!std::regex_search(header, sm, kShape)) {
        return unsupported_npy(path + ": the array must be 2-D");
    }
    feature_matrix m;
    m.rows = std::stoull(sm[1].str());
    m.cols = std::stoull(sm[2].str());
    m.data.resize(m.rows * m.cols);
    if (!read_bytes(in, m.data.data(), m.data.size() * sizeof(float))) {
        return corruption(path + ": truncated data, expected " +
                          std::to_string(m.rows) + " x " +
                          std::to_string(m.cols) + " floats");
    }
    return m;
}

status write_npy(const std::string &path, const feature_matrix &m) {
    std::string header =
        "{'descr': '<f4', 'fortran_order': False, "
        "'shape': (" +
        std::to_string(m.rows) + ", " + std::to_string(m.cols) + "), }";
    const size_t fixed = kNpyMagicSize + 2 + 2;
    while ((fixed + header.size() + 1) % kNpyAlign != 0)
        header += ' ';
    header += '\n';

    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out)
        return io_error(path + ": cannot open for writing");
    out.write(kNpyMagic, kNpyMagicSize);
    out.put(static_cast<char>(kNpyVersionOne));
    out.put(0);
    write_le(out, header.size(), 2);
    out << header;
    out.write(reinterpret_cast<const char *>(m.data.data()),
              static_cast<std::streamsize>(m.data.size() * sizeof(float)));
    if (!out.flush())
        return io_error(path + ": write failed");
    return status::ok();
}

result<std::vector<std::string>> read_lines(const std::string &path) {
    std::ifstream in(path);
    if (!in)
        return not_found(path + ": cannot open for reading");
    std::vector<std::string> lines;
    std::string line;
    while (std::getline(in, line)) {
        while (!line.empty() &&
               std::isspace(static_cast<unsigned char>(line.back())) != 0) {
            line.pop_back();
        }
        if (!line.empty())
            lines.push_back(line);
    }
    if (in.bad())
        return io_error(path + ": read failed");
    return lines;
}

uint64_t feature_cache::list_hash(const std::vector<std::string> &images) {
    uint64_t h = kFnvOffset;
    for (const std::string &s : images) {
        for (unsigned char c : s)
            h = (h ^ c) * kFnvPrime;
        h = (h ^ kSeparator) * kFnvPrime;
    }
    return h;
}

result<feature_matrix> feature_cache::read(
    const std::vector<std::string> &images) {
    std::ifstream in(path_, std::ios::binary);
    if (!in)
        return not_found("no cache file");

    char magic[kCacheMagicSize];
    unsigned char len[kLengthBytes];
    if (!read_bytes(in, magic, kCacheMagicSize) ||
        std::memcmp(magic, kCacheMagic, kCacheMagicSize) != 0 ||
        !read_bytes(in, len, kLengthBytes)) {
        return corruption("bad magic");
    }
    const uint64_t n = read_le(len, kLengthBytes);
    if (n > kMaxHeaderBytes)
        return corruption("implausible header length");
    std::string text(n, '\0');
    if (!read_bytes(in, text.data(), n))
        return corruption("truncated");
    nlohmann::json h = nlohmann::json::parse(text, nullptr, false);
    if (h.is_discarded() || !h.is_object())
        return corruption("bad header");

    // Every part of the key must match.
    if (h.value("backbone", "") != key_.backbone_fingerprint) {
        return mismatch("backbone fingerprint changed");
    }
    if (h.value("preprocessing", "") != key_.preprocessing) {
        return mismatch("preprocessing changed");
    }
    if (h.value("list_hash", uint64_t{0}) != list_hash(images) ||
        h.value("rows", size_t{0}) != images.size()) {
        return mismatch("image list changed");
    }
    feature_matrix m;
    m.rows = images.size();
    m.cols = h.value("cols", size_t{0});
    m.data.resize(m.rows * m.cols);
    if (m.cols == 0 ||
        !read_bytes(in, m.data.data(), m.data.size() * sizeof(float))) {
        return corruption("truncated data");
    }
    return m;
}

status feature_cache::write(const std::vector<std::string> &images,
                            const feature_matrix &m) const {
    nlohmann::json h = {{"backbone", key_.backbone_fingerprint},
                        {"preprocessing", key_.preprocessing},
                        {"list_hash", list_hash(images)},
                        {"rows", m.rows},
                        {"cols", m.cols}};
    const std::string text = h.dump();
    const std::string tmp = path_ + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out)
            return io_error(tmp + ": cannot open for writing");
        out.write(kCacheMagic, kCacheMagicSize);
        write_le(out, text.size(), kLengthBytes);
        out << text;
        out.write(reinterpret_cast<const char *>(m.data.data()),
                  static_cast<std::streamsize>(m.data.size() * sizeof(float)));
        if (!out.flush())
            return io_error(tmp + ": write failed");
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path_, ec);
    if (ec)
        return io_error(path_ + ": rename failed: " + ec.message());
    return status::ok();
}

result<feature_matrix> feature_cache::get(
    const std::vector<std::string> &images, const feature_fn &compute,
    const progress_fn &progress) {
    result<feature_matrix> cached = read(images);
    hit_ = cached.is_ok();
    if (hit_) {
        miss_reason_.clear();
        return cached;
    }
    miss_reason_ = cached.error().message();
    logger()->info("feature cache {}: recomputing {} images ({})", path_,
                   images.size(), miss_reason_);

    // Compute every image; the first failure stops.
    feature_matrix m;
    m.rows = images.size();
    for (size_t i = 0; i < images.size(); ++i) {
        result<std::vector<float>> f = compute(images[i]);
        if (!f)
            return f.error().with_context(images[i]);
        if (i == 0)
            m.cols = f->size();
        if (f->size() != m.cols || m.cols == 0) {
            return invalid_argument(images[i] + ": features have dim " +
                                    std::to_string(f->size()) + ", expected " +
                                    std::to_string(m.cols));
        }
        if (!finite_row(f->data(), f->size())) {
            return invalid_argument(images[i] + ": features hold NaN or Inf");
        }
        m.data.insert(m.data.end(), f->begin(), f->end());
        if (progress)
            progress(i + 1, images.size());
    }

    status w = write(images, m);
    if (!w.is_ok()) {
        logger()->warn("feature cache not written: {}", w.message());
    }
    return m;
}

}  // namespace facevec::train
