// The RocksDB options the store runs with, for benchmarks that compare
// the store with plain RocksDB: the baseline gets the same settings.
// Internal to facevec::storage.
#pragma once

#include <rocksdb/options.h>

namespace facevec::storage::internal {

// The store's database options with the options of its faces column
// family (where the embeddings are), and create_if_missing set.
rocksdb::Options raw_store_options();

// The read options of the store's bulk loads (readahead, no block cache
// fill); the caller sets a snapshot if it wants one.
rocksdb::ReadOptions bulk_read_options();

}  // namespace facevec::storage::internal
