// Autocast (automatic mixed precision) switches that tch does not expose: tch can turn CUDA
// autocast on, but not choose its lower-precision type, which libtorch defaults to float16.
// rnmt's `--precision bf16` needs bfloat16. Every function catches C++ exceptions and reports
// failure through its return value, so nothing unwinds into Rust.
#include <ATen/autocast_mode.h>

namespace {
c10::DeviceType device_type(int cuda) {
  return cuda ? c10::DeviceType::CUDA : c10::DeviceType::CPU;
}
}  // namespace

extern "C" {

// Turns autocast on for the CPU (cuda == 0) or CUDA (cuda != 0) with float16 (half != 0) or
// bfloat16 as the lower precision, and enters one nesting level. Returns the previous state
// for rnmt_autocast_exit (bit 0: enabled, bits 1..: the previous dtype), or -1 on failure.
int rnmt_autocast_enter(int cuda, int half) {
  try {
    auto d = device_type(cuda);
    int enabled = at::autocast::is_autocast_enabled(d) ? 1 : 0;
    int dtype = static_cast<int>(at::autocast::get_autocast_dtype(d));
    at::autocast::set_autocast_dtype(d, half ? at::kHalf : at::kBFloat16);
    at::autocast::set_autocast_enabled(d, true);
    at::autocast::increment_nesting();
    return enabled | (dtype << 1);
  } catch (...) {
    return -1;
  }
}

// Leaves the nesting level entered by rnmt_autocast_enter and restores the state it returned;
// the cache of cast weights is cleared when the outermost level ends. Returns 0, or -1.
int rnmt_autocast_exit(int cuda, int previous) {
  try {
    auto d = device_type(cuda);
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    at::autocast::set_autocast_enabled(d, (previous & 1) != 0);
    at::autocast::set_autocast_dtype(d, static_cast<at::ScalarType>(previous >> 1));
    return 0;
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
