#include "embed/import_keras.h"

#include <hdf5.h>

#include <filesystem>

#include "embed/models.h"

namespace facevec::embed {
namespace {

// Silences HDF5's error printing while alive (errors come back as
// statuses instead), restoring the previous handler after.
class quiet_hdf5 {
  public:
    quiet_hdf5() {
        H5Eget_auto2(H5E_DEFAULT, &func_, &data_);
        H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    }
    ~quiet_hdf5() { H5Eset_auto2(H5E_DEFAULT, func_, data_); }
    quiet_hdf5(const quiet_hdf5 &) = delete;
    quiet_hdf5 &operator=(const quiet_hdf5 &) = delete;

  private:
    H5E_auto2_t func_ = nullptr;
    void *data_ = nullptr;
};

// Closes an HDF5 handle with `close` when it goes out of scope.
template <herr_t (*Close)(hid_t)>
struct hid_guard {
    hid_t id;
    ~hid_guard() {
        if (id >= 0)
            Close(id);
    }
};

// True when every component of `path` exists under `file`.
bool path_exists(hid_t file, const std::string &path) {
    size_t pos = 0;
    while (true) {
        pos = path.find('/', pos + 1);
        std::string prefix = path.substr(0, pos);
        if (H5Lexists(file, prefix.c_str(), H5P_DEFAULT) <= 0)
            return false;
        if (pos == std::string::npos)
            return true;
    }
}

// Reads dataset `path` as floats, checking its shape.
result<tensor> read_dataset(hid_t file, const std::string &h5_path,
                            const std::string &path,
                            const std::vector<int64_t> &want) {
    if (!path_exists(file, path)) {
        return mismatch(h5_path + ": dataset " + path + " is missing");
    }
    hid_guard<H5Dclose> ds{H5Dopen2(file, path.c_str(), H5P_DEFAULT)};
    hid_guard<H5Sclose> space{ds.id >= 0 ? H5Dget_space(ds.id) : -1};
    if (ds.id < 0 || space.id < 0) {
        return corruption(h5_path + ": dataset " + path + " is unreadable");
    }
    int rank = H5Sget_simple_extent_ndims(space.id);
    std::vector<hsize_t> dims(rank > 0 ? rank : 0);
    H5Sget_simple_extent_dims(space.id, dims.data(), nullptr);
    tensor t;
    t.shape.assign(dims.begin(), dims.end());
    if (t.shape != want) {
        return mismatch(h5_path + ": dataset " + path +
                        " has the wrong shape for VGG16");
    }
    t.data.resize(t.elements());
    if (H5Dread(ds.id, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT,
                t.data.data()) < 0) {
        return corruption(h5_path + ": dataset " + path +
                          " cannot be read as floats");
    }
    return t;
}

}  // namespace

result<tensor_map> import_keras_vgg16(const std::string &h5_path) {
    if (!std::filesystem::exists(h5_path)) {
        return not_found(h5_path + ": no such file");
    }
    quiet_hdf5 quiet;
    if (H5Fis_hdf5(h5_path.c_str()) <= 0) {
        return corruption(h5_path + ": not an HDF5 file");
    }
    hid_guard<H5Fclose> file{
        H5Fopen(h5_path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT)};
    if (file.id < 0)
        return corruption(h5_path + ": cannot be opened");

    // Keras stores kernels H x W x I x O; facevec wants O x I x H x W.
    tensor_map out;
    auto specs = required_weights(vgg16_network(vgg16_params{}));
    FACEVEC_ASSERT(specs.is_ok(), specs.error().to_string());
    for (const weight_spec &s : *specs) {
        std::string layer = s.name.substr(0, s.name.rfind('/'));
        std::string what = s.name.substr(s.name.rfind('/') + 1);
        if (!layer.starts_with("block") ||
            (what != "weight" && what != "bias")) {
            continue;
        }
        std::string base = layer + "/" + layer + "/";
        if (what == "bias") {
            auto b = read_dataset(file.id, h5_path, base + "bias:0", s.shape);
            if (!b)
                return b.error();
            out[s.name] = std::move(b).value();
            continue;
        }
        std::vector<int64_t> hwio = {s.shape[2], s.shape[3], s.shape[1],
                                     s.shape[0]};
        auto k = read_dataset(file.id, h5_path, base + "kernel:0", hwio);
        if (!k)
            return k.error();
        tensor oihw;
        oihw.shape = s.shape;
        oihw.data.resize(k->data.size());
        int64_t kh = hwio[0], kw = hwio[1], in = hwio[2], o = hwio[3];
        for (int64_t y = 0; y < kh; ++y) {
            for (int64_t x = 0; x < kw; ++x) {
                for (int64_t i = 0; i < in; ++i) {
                    for (int64_t c = 0; c < o; ++c) {
                        oihw.data[((c * in + i) * kh + y) * kw + x] =
                            k->data[((y * kw + x) * in + i) * o + c];
                    }
                }
            }
        }
        out[s.name] = std::move(oihw);
    }
    return out;
}

}  // namespace facevec::embed
