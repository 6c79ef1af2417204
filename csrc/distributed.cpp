// The C ABI between rnmt (src/distributed.rs) and libtorch's c10d engine: a TCPStore
// rendezvous, a process group (Gloo, or NCCL for CUDA tensors when built with it), and the
// collectives rnmt needs (all-reduce of a list of tensors in flattened buckets, broadcast,
// barrier). Nothing here is a collective implementation of its own: every byte moves through
// libtorch's c10d::Backend.
//
// Conventions:
// * Every function that can fail returns NULL on success or a heap-allocated one-line
//   message (release it with rnmt_dist_free_error). No C++ exception crosses the boundary: a
//   c10::Error, std::exception or anything else thrown by libtorch becomes that message.
// * Tensors are passed as `at::Tensor*`, which is what tch's `Tensor::as_ptr()` gives (the
//   `tensor` type of torch-sys's torch_api.h is `torch::Tensor*`).
// * Every wait is bounded by the group's timeout: a dead peer is an error, not a hang (Gloo
//   also fails at once when a peer's connection closes).
//
// Gloo headers: ProcessGroupGloo.hpp includes Gloo's own headers, which the libtorch wheel
// does not ship. build.rs compiles this file against Debian's libgloo-dev headers
// (scripts/setup.sh installs the package). That is safe because this file uses Gloo only
// through libtorch: the ProcessGroupGloo constructor, its Options::create_default factory and
// its virtual methods are all compiled inside libtorch_cpu.so (with libtorch's own copy of
// Gloo), and the only Gloo types in the parts of the header we touch sit behind
// std::shared_ptr, whose size does not depend on the pointee. No Gloo symbol is linked from
// the system library and none of its header code is compiled in (tests/link.rs checks both).
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <ATen/core/grad_mode.h>
#include <c10/util/Exception.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>

#ifdef RNMT_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif

#include "distributed.h"

struct rnmt_pg {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
  std::chrono::milliseconds timeout;
};

namespace {

char* error_string(const std::string& message) {
  // Only the first line: c10::Error messages may carry a C++ backtrace after it.
  std::string line = message.substr(0, message.find('\n'));
  if (line.empty()) line = "unknown error";
  char* out = static_cast<char*>(std::malloc(line.size() + 1));
  if (out != nullptr) std::memcpy(out, line.c_str(), line.size() + 1);
  return out;
}

// Runs `body`; an exception becomes the returned message.
template <typename F>
char* guard(F&& body) {
  try {
    body();
    return nullptr;
  } catch (const c10::Error& e) {
    return error_string(e.what_without_backtrace());
  } catch (const std::exception& e) {
    return error_string(e.what());
  } catch (...) {
    return error_string("unknown C++ exception");
  }
}

// Waits for `work` within the group's timeout; an unfinished or failed work throws.
void wait(rnmt_pg* pg, const c10::intrusive_ptr<c10d::Work>& work, const char* what) {
  if (!work->wait(pg->timeout)) {
    throw std::runtime_error(std::string(what) + " did not finish within " +
                             std::to_string(pg->timeout.count()) + " ms");
  }
}

std::vector<at::Tensor> tensors_of(at::Tensor** tensors, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    TORCH_CHECK(tensors[i] != nullptr && tensors[i]->defined(), "tensor ", i, " is undefined");
    out.push_back(tensors[i]->detach());
  }
  return out;
}

// Consecutive runs of tensors with one dtype and device, each run cut at `bucket_bytes`:
// the (begin, end) index ranges that are flattened into one buffer each.
std::vector<std::pair<size_t, size_t>> buckets(const std::vector<at::Tensor>& ts,
                                               int64_t bucket_bytes) {
  std::vector<std::pair<size_t, size_t>> out;
  size_t begin = 0;
  int64_t bytes = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    int64_t b = ts[i].numel() * static_cast<int64_t>(ts[i].element_size());
    bool same = i == begin || (ts[i].scalar_type() == ts[begin].scalar_type() &&
                               ts[i].device() == ts[begin].device());
    if (i > begin && (!same || bytes + b > bucket_bytes)) {
      out.emplace_back(begin, i);
      begin = i;
      bytes = 0;
    }
    bytes += b;
  }
  if (begin < ts.size()) out.emplace_back(begin, ts.size());
  return out;
}

}  // namespace

extern "C" {

int rnmt_dist_has_gloo() {
#ifdef RNMT_WITH_GLOO
  return 1;
#else
  return 0;
#endif
}

int rnmt_dist_has_nccl() {
#ifdef RNMT_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

char* rnmt_dist_new(const char* backend, const char* host, int port, int rank, int world_size,
                    int is_store_server, int64_t timeout_ms, rnmt_pg** out) {
  *out = nullptr;
  return guard([&] {
    TORCH_CHECK(port > 0 && port < 65536, "port ", port, " is out of range");
    TORCH_CHECK(world_size > 0 && rank >= 0 && rank < world_size, "rank ", rank,
                " is not in a world of size ", world_size);
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions opts;
    opts.port = static_cast<std::uint16_t>(port);
    opts.isServer = is_store_server != 0;
    opts.numWorkers = static_cast<std::size_t>(world_size);
    opts.waitWorkers = false;  // the process group's own rendezvous waits, with the timeout
    opts.timeout = timeout;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), opts);
    // A prefix of our own, so that rnmt's keys never meet those of torchrun's agent, whose
    // store the workers share when TORCHELASTIC_USE_AGENT_STORE is set.
    c10::intrusive_ptr<c10d::Store> store =
        c10::make_intrusive<c10d::PrefixStore>("rnmt", tcp);
    c10::intrusive_ptr<c10d::Backend> group;
    std::string name(backend);
    if (name == "gloo") {
#ifdef RNMT_WITH_GLOO
      auto options = c10d::ProcessGroupGloo::Options::create_default(timeout);
      options->timeout = timeout;
      group = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world_size, options);
#else
      TORCH_CHECK(false,
                  "this rnmt was built without Gloo (its headers were missing): install "
                  "libgloo-dev (scripts/setup.sh does) and rebuild");
#endif
    } else if (name == "nccl") {
#ifdef RNMT_WITH_NCCL
      group = rnmt_make_nccl(store, rank, world_size, timeout);
#else
      TORCH_CHECK(false,
                  "this rnmt was built without NCCL (it needs a CUDA toolkit's headers at "
                  "build time, see README); use --dist-backend gloo");
#endif
    } else {
      TORCH_CHECK(false, "unknown backend '", name, "'");
    }
    *out = new rnmt_pg{store, group, timeout};
  });
}

void rnmt_dist_free(rnmt_pg* pg) {
  try {
    delete pg;
  } catch (...) {
  }
}

void rnmt_dist_free_error(char* message) { std::free(message); }

char* rnmt_dist_all_reduce_sum(rnmt_pg* pg, at::Tensor** tensors, size_t n,
                               int64_t bucket_bytes) {
  return guard([&] {
    at::NoGradGuard no_grad;
    auto ts = tensors_of(tensors, n);
    std::vector<std::vector<at::Tensor>> flats;
    std::vector<c10::intrusive_ptr<c10d::Work>> works;
    auto ranges = buckets(ts, bucket_bytes);
    // Start every bucket, then wait for them: the backend works on them in order meanwhile.
    for (auto [begin, end] : ranges) {
      std::vector<at::Tensor> parts;
      for (size_t i = begin; i < end; ++i) parts.push_back(ts[i].reshape({-1}));
      std::vector<at::Tensor> flat{end - begin == 1 && ts[begin].is_contiguous()
                                       ? parts[0]
                                       : at::cat(parts)};
      c10d::AllreduceOptions opts;
      opts.reduceOp = c10d::ReduceOp::SUM;
      opts.timeout = pg->timeout;
      works.push_back(pg->backend->allreduce(flat, opts));
      flats.push_back(flat);
    }
    for (size_t b = 0; b < ranges.size(); ++b) {
      wait(pg, works[b], "an all-reduce");
      auto [begin, end] = ranges[b];
      if (end - begin == 1 && ts[begin].is_contiguous()) continue;  // reduced in place
      int64_t offset = 0;
      for (size_t i = begin; i < end; ++i) {
        int64_t k = ts[i].numel();
        ts[i].copy_(flats[b][0].narrow(0, offset, k).view(ts[i].sizes()));
        offset += k;
      }
    }
  });
}

char* rnmt_dist_broadcast(rnmt_pg* pg, at::Tensor** tensors, size_t n, int root) {
  return guard([&] {
    at::NoGradGuard no_grad;
    auto ts = tensors_of(tensors, n);
    for (auto& t : ts) {
      TORCH_CHECK(t.is_contiguous(), "broadcast needs contiguous tensors");
      std::vector<at::Tensor> one{t};
      c10d::BroadcastOptions opts;
      opts.rootRank = root;
      opts.timeout = pg->timeout;
      wait(pg, pg->backend->broadcast(one, opts), "a broadcast");
    }
  });
}

char* rnmt_dist_barrier(rnmt_pg* pg) {
  return guard([&] {
    c10d::BarrierOptions opts;
    opts.timeout = pg->timeout;
    wait(pg, pg->backend->barrier(opts), "a barrier");
  });
}

}  // extern "C"
