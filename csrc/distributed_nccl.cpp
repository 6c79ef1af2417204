// The NCCL process group for CUDA tensors, built by build.rs only when libtorch has
// libtorch_cuda.so and a CUDA toolkit's headers are found (CUDA_HOME, default
// /usr/local/cuda): ProcessGroupNCCL.hpp needs the CUDA runtime and CCCL headers, which the
// libtorch wheel does not ship. The constructor and every method run inside
// libtorch_cuda.so; NCCL's own header comes from the wheel's nvidia-nccl package, the NCCL
// that libtorch was built with.
#include "distributed.h"

#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>

c10::intrusive_ptr<c10d::Backend> rnmt_make_nccl(const c10::intrusive_ptr<c10d::Store>& store,
                                                 int rank, int world_size,
                                                 std::chrono::milliseconds timeout) {
  auto options = c10d::ProcessGroupNCCL::Options::create();
  options->timeout = timeout;
  return c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world_size, options);
}
