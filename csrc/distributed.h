// Declarations shared by distributed.cpp and distributed_nccl.cpp; the extern "C" functions
// are those src/distributed.rs binds (see distributed.cpp for the conventions).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>

#include <ATen/core/Tensor.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/Store.hpp>

struct rnmt_pg;

extern "C" {
int rnmt_dist_has_gloo();
int rnmt_dist_has_nccl();
char* rnmt_dist_new(const char* backend, const char* host, int port, int rank, int world_size,
                    int is_store_server, int64_t timeout_ms, rnmt_pg** out);
void rnmt_dist_free(rnmt_pg* pg);
void rnmt_dist_free_error(char* message);
char* rnmt_dist_all_reduce_sum(rnmt_pg* pg, at::Tensor** tensors, size_t n,
                               int64_t bucket_bytes);
char* rnmt_dist_broadcast(rnmt_pg* pg, at::Tensor** tensors, size_t n, int root);
char* rnmt_dist_barrier(rnmt_pg* pg);
}

#ifdef RNMT_WITH_NCCL
// A ProcessGroupNCCL over `store` (distributed_nccl.cpp).
c10::intrusive_ptr<c10d::Backend> rnmt_make_nccl(const c10::intrusive_ptr<c10d::Store>& store,
                                                 int rank, int world_size,
                                                 std::chrono::milliseconds timeout);
#endif
