// Adam's update as libtorch's fused multi-tensor kernel (`_fused_adamw_`, what PyTorch's
// `torch.optim.AdamW(fused=True)` runs), which tch does not wrap: one pass over every
// parameter, its gradient and both moments, instead of about ten elementwise operations and
// their temporaries per parameter. Used by src/optim.rs (`Adam::step`). Catches every C++
// exception and returns it as a malloc'ed message (NULL on success) that Rust frees.
#include <ATen/ATen.h>

#include "message.h"
#include <c10/core/GradMode.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {
std::vector<at::Tensor> list(at::Tensor** ts, size_t n) {
  std::vector<at::Tensor> out;
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    TORCH_CHECK(ts[i] != nullptr && ts[i]->defined(), "tensor ", i, " is undefined");
    out.push_back(*ts[i]);
  }
  return out;
}

}  // namespace

extern "C" {

// One AdamW update of `n` parameters in place: `params`, `grads`, first and second moments,
// and float32 step counters (the number of this update, which the bias corrections read; the
// kernel does not increment them: PyTorch's optimizer does that before the call), with decoupled weight
// decay `weight_decay` (lr * weight_decay * param is subtracted first).
char* rnmt_fused_adamw(at::Tensor** params, at::Tensor** grads, at::Tensor** m, at::Tensor** v,
                       at::Tensor** steps, size_t n, double lr, double beta1, double beta2,
                       double weight_decay, double eps) {
  try {
    c10::AutoGradMode no_grad(false);
    auto p = list(params, n);
    auto g = list(grads, n);
    auto em = list(m, n);
    auto ev = list(v, n);
    auto st = list(steps, n);
    at::_fused_adamw_(p, g, em, ev, {}, st, lr, beta1, beta2, weight_decay, eps,
                      /*amsgrad=*/false, /*maximize=*/false);
    return nullptr;
  } catch (const std::exception& e) {
    return rnmt_message(e.what());
  } catch (...) {
    return rnmt_message("unknown C++ exception in _fused_adamw_");
  }
}

}  // extern "C"

extern "C" void rnmt_adam_free_message(char* message) { std::free(message); }
