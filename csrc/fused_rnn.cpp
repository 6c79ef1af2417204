// Fused recurrent layers for the CPU: one unidirectional LSTM or GRU layer over a whole padded
// sequence, forward and backward, as one autograd node (the cuDNN design, Appleyard et al.
// 2016), bound by src/model/fused_rnn.rs.
//
// On the CPU libtorch runs a GRU (and a packed LSTM) as a loop of small operations per time
// step, each recorded by autograd, and backward replays them one by one. Here:
//   forward:  the input projection of all steps as one GEMM; per step one recurrent GEMM added
//             in place into that step's gates and one pass over the gates (activations, the
//             new cell and hidden state), which keeps the activations for backward;
//   backward: per step one pass over the gates (their pre-activation gradients) and one GEMM
//             for the gradient of the previous hidden state; then the input gradient, both
//             weight gradients and the bias gradients as one GEMM (or sum) over all steps.
// Two independent sequences (the two directions of a bidirectional layer) run side by side
// on two threads (at::parallel_for; inside it every GEMM is single-threaded), which pays on
// small products where a 2-thread GEMM scales poorly.
//
// Gate layouts follow PyTorch (nn.LSTM: i, f, g, o; nn.GRU: r, z, n):
//   LSTM  c' = f*c + i*g,  h' = o*tanh(c')
//   GRU   n = tanh(W_n x + b_in + r*(U_n h + b_hn)),  h' = (1 - z)*n + z*h
// Only float32, contiguous CPU tensors; the caller checks. Every extern "C" function catches
// C++ exceptions and returns them as a malloc'ed message (NULL on success).
#include <ATen/ATen.h>

#include "message.h"
#include <ATen/Parallel.h>
#include <c10/core/DispatchKeySet.h>
#include <c10/core/GradMode.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <torch/csrc/autograd/custom_function.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// Each pointwise kernel is compiled twice, for AVX2+FMA and for the baseline, and picked at
// load time (GCC/Clang function multiversioning); the loops are plain so that the compiler
// vectorizes them.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define RNMT_CLONES __attribute__((target_clones("avx2,fma", "default")))
#else
#define RNMT_CLONES
#endif

namespace {

enum Cell : int64_t { kLstm = 0, kGru = 1 };

// exp(x) for |x| <= 87 by range reduction to [-ln2/2, ln2/2] and Cephes' degree-6 polynomial
// (relative error about 2e-7), written without branches so that it vectorizes.
inline float exp_approx(float x) {
  x = std::min(std::max(x, -87.0f), 87.0f);
  // floor(x * log2(e) + 0.5), by truncation of a number made positive.
  float t = x * 1.44269504088896341f + 0.5f + 128.0f;
  int32_t n = static_cast<int32_t>(t) - 128;
  float fn = static_cast<float>(n);
  float r = x - fn * 0.693359375f + fn * 2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * r * r + r + 1.0f;
  int32_t bits = (n + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof scale);
  return y * scale;
}

inline float sigmoid(float x) { return 1.0f / (1.0f + exp_approx(-x)); }
inline float tanh_approx(float x) { return 2.0f / (1.0f + exp_approx(-2.0f * x)) - 1.0f; }

// ---- LSTM pointwise passes (rows of `h` values; gates rows are 4h wide: i, f, g, o) ----

// In: g = pre-activation gates [rows, 4h] (plus `bias` [4h] when not NULL), c_prev [rows, h].
// Out: g activated in place, c, tc = tanh(c), out = o * tc.
RNMT_CLONES void lstm_forward_rows(float* g, const float* bias, const float* c_prev, float* c,
                                   float* tc, float* out, int64_t rows, int64_t h) {
  for (int64_t b = 0; b < rows; ++b) {
    float* gr = g + b * 4 * h;
    if (bias != nullptr) {
      for (int64_t j = 0; j < 4 * h; ++j) gr[j] += bias[j];
    }
    for (int64_t j = 0; j < 2 * h; ++j) gr[j] = sigmoid(gr[j]);
    for (int64_t j = 2 * h; j < 3 * h; ++j) gr[j] = tanh_approx(gr[j]);
    for (int64_t j = 3 * h; j < 4 * h; ++j) gr[j] = sigmoid(gr[j]);
    const float* cp = c_prev + b * h;
    float* cr = c + b * h;
    float* tr = tc + b * h;
    float* orow = out + b * h;
    for (int64_t j = 0; j < h; ++j) {
      float cn = gr[h + j] * cp[j] + gr[j] * gr[2 * h + j];
      cr[j] = cn;
      float t = tanh_approx(cn);
      tr[j] = t;
      orow[j] = gr[3 * h + j] * t;
    }
  }
}

// In: activated gates a [rows, 4h], c_prev, tc, dh (gradient of this step's h, all sources),
// dc (gradient of this step's c from the next step). Out: dgates [rows, 4h] (pre-activation),
// dc replaced by the gradient of c_prev.
RNMT_CLONES void lstm_backward_rows(const float* a, const float* c_prev, const float* tc,
                                    const float* dh, float* dc, float* dg, int64_t rows,
                                    int64_t h) {
  for (int64_t b = 0; b < rows; ++b) {
    const float* ar = a + b * 4 * h;
    const float* cp = c_prev + b * h;
    const float* tr = tc + b * h;
    const float* dhr = dh + b * h;
    float* dcr = dc + b * h;
    float* dgr = dg + b * 4 * h;
    for (int64_t j = 0; j < h; ++j) {
      float i = ar[j], f = ar[h + j], gg = ar[2 * h + j], o = ar[3 * h + j];
      float t = tr[j];
      float d = dhr[j];
      float dcn = dcr[j] + d * o * (1.0f - t * t);
      dgr[j] = dcn * gg * i * (1.0f - i);
      dgr[h + j] = dcn * cp[j] * f * (1.0f - f);
      dgr[2 * h + j] = dcn * i * (1.0f - gg * gg);
      dgr[3 * h + j] = d * t * o * (1.0f - o);
      dcr[j] = dcn * f;
    }
  }
}

// ---- GRU pointwise passes (gates rows 3h wide: r, z, n) ----

// In: gi = x W_ih^T + b_ih for this step [rows, 3h], gh = h_prev W_hh^T + b_hh [rows, 3h],
// h_prev. Out: acts = the activations r, z, n [rows, 3h] (may be gi itself), ghn = gh's n
// part [rows, h] (kept for backward), out = the new h.
RNMT_CLONES void gru_forward_rows(const float* gi, float* acts, const float* gh,
                                  const float* h_prev, float* ghn, float* out, int64_t rows,
                                  int64_t h) {
  for (int64_t b = 0; b < rows; ++b) {
    const float* ir = gi + b * 3 * h;
    float* ar = acts + b * 3 * h;
    const float* ghr = gh + b * 3 * h;
    const float* hp = h_prev + b * h;
    float* gnr = ghn + b * h;
    float* orow = out + b * h;
    for (int64_t j = 0; j < 2 * h; ++j) ar[j] = sigmoid(ir[j] + ghr[j]);
    for (int64_t j = 0; j < h; ++j) {
      float r = ar[j], z = ar[h + j];
      float hn = ghr[2 * h + j];
      gnr[j] = hn;
      float n = tanh_approx(ir[2 * h + j] + r * hn);
      ar[2 * h + j] = n;
      orow[j] = n + z * (hp[j] - n);
    }
  }
}

// In: activations a (r, z, n) [rows, 3h], ghn, h_prev, dh (gradient of this step's h).
// Out: dgi [rows, 3h] (gradient of x W_ih^T + b_ih), dgh [rows, 3h] (of h W_hh^T + b_hh),
// dh_direct = dh * z (the part of h_prev's gradient that bypasses W_hh).
RNMT_CLONES void gru_backward_rows(const float* a, const float* ghn, const float* h_prev,
                                   const float* dh, float* dgi, float* dgh, float* dh_direct,
                                   int64_t rows, int64_t h) {
  for (int64_t b = 0; b < rows; ++b) {
    const float* ar = a + b * 3 * h;
    const float* gnr = ghn + b * h;
    const float* hp = h_prev + b * h;
    const float* dhr = dh + b * h;
    float* dir = dgi + b * 3 * h;
    float* dhh = dgh + b * 3 * h;
    float* dd = dh_direct + b * h;
    for (int64_t j = 0; j < h; ++j) {
      float r = ar[j], z = ar[h + j], n = ar[2 * h + j];
      float d = dhr[j];
      float dn = d * (1.0f - z) * (1.0f - n * n);
      float dz = d * (hp[j] - n) * z * (1.0f - z);
      float dr = dn * gnr[j] * r * (1.0f - r);
      dir[j] = dr;
      dir[h + j] = dz;
      dir[2 * h + j] = dn;
      dhh[j] = dr;
      dhh[h + j] = dz;
      dhh[2 * h + j] = dn * r;
      dd[j] = d * z;
    }
  }
}

// Runs f(begin, end) over rows in chunks of at least ~8k values, on libtorch's threads.
template <typename F>
void over_rows(int64_t rows, int64_t width, const F& f) {
  int64_t grain = std::max<int64_t>(1, 8192 / std::max<int64_t>(1, width));
  at::parallel_for(0, rows, grain, f);
}

// One direction's tensors. x [T, B, I]; h0, c0 [B, H] (c0 undefined for a GRU); weights in
// nn.LSTM/nn.GRU layout.
struct Seq {
  at::Tensor x, h0, c0, w_ih, w_hh, b_ih, b_hh;
};

// What forward keeps for backward, per direction.
struct Saved {
  at::Tensor acts;  // [T, B, G*H] activated gates
  at::Tensor c;     // LSTM: [T, B, H] cell states
  at::Tensor tc;    // LSTM: [T, B, H] tanh of the cell states
  at::Tensor ghn;   // GRU: [T, B, H] n part of the recurrent product
  at::Tensor out;   // [T, B, H] hidden states
};

Saved forward_one(int64_t cell, const Seq& s) {
  const int64_t T = s.x.size(0), B = s.x.size(1), I = s.x.size(2);
  const int64_t H = s.w_hh.size(1);
  const int64_t G = cell == kLstm ? 4 : 3;
  Saved r;
  at::Tensor x2 = s.x.reshape({T * B, I});
  at::Tensor bias = cell == kLstm ? s.b_ih + s.b_hh : s.b_ih;
  r.acts = at::addmm(bias, x2, s.w_ih.t()).view({T, B, G * H});
  r.out = at::empty({T, B, H}, s.x.options());
  if (cell == kLstm) {
    r.c = at::empty({T, B, H}, s.x.options());
    r.tc = at::empty({T, B, H}, s.x.options());
  } else {
    r.ghn = at::empty({T, B, H}, s.x.options());
  }
  at::Tensor gh = cell == kGru ? at::empty({B, G * H}, s.x.options()) : at::Tensor();
  at::Tensor w_hh_t = s.w_hh.t();
  for (int64_t t = 0; t < T; ++t) {
    at::Tensor h_prev = t == 0 ? s.h0 : r.out[t - 1];
    at::Tensor g = r.acts[t];
    float* out = r.out[t].data_ptr<float>();
    if (cell == kLstm) {
      at::addmm_out(g, g, h_prev, w_hh_t);
      const float* cp = (t == 0 ? s.c0 : r.c[t - 1]).data_ptr<float>();
      float* gp = g.data_ptr<float>();
      float* c = r.c[t].data_ptr<float>();
      float* tc = r.tc[t].data_ptr<float>();
      over_rows(B, G * H, [&](int64_t b0, int64_t b1) {
        lstm_forward_rows(gp + b0 * 4 * H, nullptr, cp + b0 * H, c + b0 * H, tc + b0 * H,
                          out + b0 * H, b1 - b0, H);
      });
    } else {
      at::addmm_out(gh, s.b_hh, h_prev, w_hh_t);
      float* gp = g.data_ptr<float>();
      const float* ghp = gh.data_ptr<float>();
      const float* hp = h_prev.data_ptr<float>();
      float* ghn = r.ghn[t].data_ptr<float>();
      over_rows(B, G * H, [&](int64_t b0, int64_t b1) {
        gru_forward_rows(gp + b0 * 3 * H, gp + b0 * 3 * H, ghp + b0 * 3 * H, hp + b0 * H,
                         ghn + b0 * H, out + b0 * H, b1 - b0, H);
      });
    }
  }
  return r;
}

// Gradients of one direction: [dx, dh0, dc0, dw_ih, dw_hh, db_ih, db_hh] for the gradient
// `dout` [T, B, H] of its outputs.
std::vector<at::Tensor> backward_one(int64_t cell, const Seq& s, const Saved& r,
                                     const at::Tensor& dout_in) {
  const int64_t T = s.x.size(0), B = s.x.size(1), I = s.x.size(2);
  const int64_t H = s.w_hh.size(1);
  const int64_t G = cell == kLstm ? 4 : 3;
  at::Tensor dout = dout_in.contiguous();
  at::Tensor dgi = at::empty({T, B, G * H}, s.x.options());
  at::Tensor dgh = cell == kGru ? at::empty({T, B, G * H}, s.x.options()) : dgi;
  at::Tensor dh_next = at::zeros({B, H}, s.x.options());
  at::Tensor dc = cell == kLstm ? at::zeros({B, H}, s.x.options()) : at::Tensor();
  at::Tensor dh = at::empty({B, H}, s.x.options());
  at::Tensor direct = cell == kGru ? at::empty({B, H}, s.x.options()) : at::Tensor();
  for (int64_t t = T - 1; t >= 0; --t) {
    at::add_out(dh, dout[t], dh_next);
    const float* dhp = dh.data_ptr<float>();
    if (cell == kLstm) {
      const float* a = r.acts[t].data_ptr<float>();
      const float* cp = (t == 0 ? s.c0 : r.c[t - 1]).data_ptr<float>();
      const float* tc = r.tc[t].data_ptr<float>();
      float* dcp = dc.data_ptr<float>();
      float* dg = dgi[t].data_ptr<float>();
      over_rows(B, G * H, [&](int64_t b0, int64_t b1) {
        lstm_backward_rows(a + b0 * 4 * H, cp + b0 * H, tc + b0 * H, dhp + b0 * H,
                           dcp + b0 * H, dg + b0 * 4 * H, b1 - b0, H);
      });
      at::mm_out(dh_next, dgi[t], s.w_hh);
    } else {
      const float* a = r.acts[t].data_ptr<float>();
      const float* gn = r.ghn[t].data_ptr<float>();
      const float* hp = (t == 0 ? s.h0 : r.out[t - 1]).data_ptr<float>();
      float* di = dgi[t].data_ptr<float>();
      float* dhh = dgh[t].data_ptr<float>();
      float* dd = direct.data_ptr<float>();
      over_rows(B, G * H, [&](int64_t b0, int64_t b1) {
        gru_backward_rows(a + b0 * 3 * H, gn + b0 * H, hp + b0 * H, dhp + b0 * H,
                          di + b0 * 3 * H, dhh + b0 * 3 * H, dd + b0 * H, b1 - b0, H);
      });
      at::addmm_out(dh_next, direct, dgh[t], s.w_hh);
    }
  }
  at::Tensor dgi2 = dgi.view({T * B, G * H});
  at::Tensor dgh2 = dgh.view({T * B, G * H});
  at::Tensor x2 = s.x.reshape({T * B, I});
  // The previous hidden state of every step: h0, then the outputs of steps 0..T-2.
  at::Tensor h_prev = T > 1 ? at::cat({s.h0.unsqueeze(0), r.out.narrow(0, 0, T - 1)}, 0)
                            : s.h0.unsqueeze(0);
  at::Tensor h_prev2 = h_prev.view({T * B, H});
  at::Tensor dx = at::mm(dgi2, s.w_ih).view({T, B, I});
  at::Tensor dw_ih = at::mm(dgi2.t(), x2);
  at::Tensor dw_hh = at::mm(dgh2.t(), h_prev2);
  at::Tensor db_ih = dgi2.sum(0);
  at::Tensor db_hh = cell == kLstm ? db_ih.clone() : dgh2.sum(0);
  return {dx, dh_next, dc, dw_ih, dw_hh, db_ih, db_hh};
}

// The work of both autograd nodes below: forward over `seqs` (one or two directions, two
// side by side on two threads), keeping what backward needs in ctx.
variable_list forward_all(AutogradContext* ctx, int64_t cell, std::vector<Seq> seqs) {
  std::vector<Saved> saved(seqs.size());
  if (seqs.size() == 2 && at::get_num_threads() > 1) {
    at::parallel_for(0, 2, 1, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) saved[k] = forward_one(cell, seqs[k]);
    });
  } else {
    for (size_t k = 0; k < seqs.size(); ++k) saved[k] = forward_one(cell, seqs[k]);
  }
  ctx->saved_data["cell"] = cell;
  ctx->saved_data["n"] = static_cast<int64_t>(seqs.size());
  variable_list outs;
  for (size_t k = 0; k < seqs.size(); ++k) {
    const std::string p = std::to_string(k);
    const Seq& s = seqs[k];
    const Saved& r = saved[k];
    for (auto& [name, t] : std::vector<std::pair<const char*, at::Tensor>>{
             {"x", s.x}, {"h0", s.h0}, {"c0", s.c0}, {"wi", s.w_ih}, {"wh", s.w_hh},
             {"acts", r.acts}, {"c", r.c}, {"tc", r.tc}, {"ghn", r.ghn}, {"out", r.out}}) {
      // Detached aliases: the values only. Keeping the output itself would tie it to this
      // node (its grad_fn) in a cycle that is never freed.
      if (t.defined()) ctx->saved_data[p + name] = t.detach();
    }
    outs.push_back(r.out);
  }
  return outs;
}

// Gradients for the inputs of forward_all: the cell id's (undefined), then 7 per direction.
variable_list backward_all(AutogradContext* ctx, const variable_list& grads) {
  const int64_t cell = ctx->saved_data["cell"].toInt();
  const int64_t n = ctx->saved_data["n"].toInt();
  auto get = [&](int64_t k, const char* name) {
    auto it = ctx->saved_data.find(std::to_string(k) + name);
    return it == ctx->saved_data.end() ? at::Tensor() : it->second.toTensor();
  };
  std::vector<Seq> seqs(n);
  std::vector<Saved> saved(n);
  for (int64_t k = 0; k < n; ++k) {
    seqs[k] = {get(k, "x"), get(k, "h0"), get(k, "c0"), get(k, "wi"), get(k, "wh"), {}, {}};
    saved[k] = {get(k, "acts"), get(k, "c"), get(k, "tc"), get(k, "ghn"), get(k, "out")};
  }
  std::vector<std::vector<at::Tensor>> g(n);
  if (n == 2 && at::get_num_threads() > 1) {
    at::parallel_for(0, 2, 1, [&](int64_t b, int64_t e) {
      for (int64_t k = b; k < e; ++k) g[k] = backward_one(cell, seqs[k], saved[k], grads[k]);
    });
  } else {
    for (int64_t k = 0; k < n; ++k) g[k] = backward_one(cell, seqs[k], saved[k], grads[k]);
  }
  variable_list out(1 + 7 * n);
  for (int64_t k = 0; k < n; ++k) {
    for (int i = 0; i < 7; ++i) out[1 + 7 * k + i] = g[k][i];
  }
  return out;
}

// A GRU has no cell state: its c0 input is an empty placeholder (autograd needs defined
// inputs), given no gradient.
at::Tensor cell_state(int64_t cell, const at::Tensor& c0) {
  return cell == kLstm ? c0 : at::Tensor();
}

// One direction as one autograd node. Inputs: x, h0, c0, w_ih, w_hh, b_ih, b_hh.
struct FusedRnn1 : public torch::autograd::Function<FusedRnn1> {
  static variable_list forward(AutogradContext* ctx, int64_t cell, at::Tensor x, at::Tensor h0,
                               at::Tensor c0, at::Tensor wi, at::Tensor wh, at::Tensor bi,
                               at::Tensor bh) {
    return forward_all(ctx, cell, {{x, h0, cell_state(cell, c0), wi, wh, bi, bh}});
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return backward_all(ctx, grads);
  }
};

// Two independent directions as one autograd node, run side by side.
struct FusedRnn2 : public torch::autograd::Function<FusedRnn2> {
  static variable_list forward(AutogradContext* ctx, int64_t cell, at::Tensor x0, at::Tensor h00,
                               at::Tensor c00, at::Tensor wi0, at::Tensor wh0, at::Tensor bi0,
                               at::Tensor bh0, at::Tensor x1, at::Tensor h01, at::Tensor c01,
                               at::Tensor wi1, at::Tensor wh1, at::Tensor bi1, at::Tensor bh1) {
    return forward_all(ctx, cell,
                       {{x0, h00, cell_state(cell, c00), wi0, wh0, bi0, bh0},
                        {x1, h01, cell_state(cell, c01), wi1, wh1, bi1, bh1}});
  }
  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    return backward_all(ctx, grads);
  }
};


}  // namespace

extern "C" {

// One layer of `cell` (0 LSTM, 1 GRU) over one or two sequences (two when x1 != NULL). Each
// sequence k has x [T, B, I], h0 [B, H], c0 [B, H] (LSTM only; NULL for a GRU), weights
// w_ih [G*H, I], w_hh [G*H, H], b_ih, b_hh [G*H]. Writes new tensors (owned by the caller) to
// out[0] (and out[1]): the hidden states [T, B, H]. Differentiable in every input.
char* rnmt_fused_rnn(int64_t cell, at::Tensor** seq0, at::Tensor** seq1, at::Tensor** out) {
  try {
    // The products inside stay float32 under an autocast region (which would lower them).
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    auto in = [](at::Tensor* t) { return t == nullptr ? at::empty({0}) : *t; };
    at::Tensor a[14];
    for (int i = 0; i < 7; ++i) {
      a[i] = in(seq0[i]);
      if (seq1 != nullptr) a[7 + i] = in(seq1[i]);
    }
    variable_list outs =
        seq1 == nullptr
            ? FusedRnn1::apply(cell, a[0], a[1], a[2], a[3], a[4], a[5], a[6])
            : FusedRnn2::apply(cell, a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9],
                               a[10], a[11], a[12], a[13]);
    for (size_t k = 0; k < outs.size(); ++k) out[k] = new at::Tensor(outs[k]);
    return nullptr;
  } catch (const std::exception& e) {
    return rnmt_message(e.what());
  } catch (...) {
    return rnmt_message("unknown C++ exception in the fused RNN");
  }
}

// One time step without autograd (decoding): `gi` [B, G*H] is the step's input projection
// with b_ih, `h` [B, H] the previous state, `c` [B, H] the previous cell state (LSTM; NULL for
// a GRU). Writes the new h (and c) as new tensors to out_h (and out_c). Refuses to run where
// autograd would record (the caller then takes libtorch's operations).
char* rnmt_rnn_step(int64_t cell, at::Tensor* gi, at::Tensor* h, at::Tensor* c, at::Tensor* w_hh,
                    at::Tensor* b_hh, at::Tensor** out_h, at::Tensor** out_c) {
  try {
    c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
    TORCH_CHECK(!c10::GradMode::is_enabled(), "rnmt_rnn_step runs without autograd only");
    const at::Tensor x = gi->contiguous();
    const at::Tensor hp = h->contiguous();
    const int64_t B = x.size(0), H = hp.size(1);
    TORCH_CHECK(x.scalar_type() == at::kFloat && hp.scalar_type() == at::kFloat,
                "rnmt_rnn_step: float32 only");
    at::Tensor h_new = at::empty({B, H}, x.options());
    at::Tensor w_t = w_hh->t();
    if (cell == kLstm) {
      TORCH_CHECK(c != nullptr, "rnmt_rnn_step: an LSTM needs its cell state");
      const at::Tensor cp = c->contiguous();
      at::Tensor gates = at::addmm(x, hp, w_t);
      at::Tensor bias = b_hh->contiguous();
      at::Tensor c_new = at::empty({B, H}, x.options());
      at::Tensor tc = at::empty({B, H}, x.options());
      float* g = gates.data_ptr<float>();
      const float* bp = bias.data_ptr<float>();
      const float* cpp = cp.data_ptr<float>();
      float* cn = c_new.data_ptr<float>();
      float* t = tc.data_ptr<float>();
      float* o = h_new.data_ptr<float>();
      over_rows(B, 4 * H, [&](int64_t b0, int64_t b1) {
        lstm_forward_rows(g + b0 * 4 * H, bp, cpp + b0 * H, cn + b0 * H, t + b0 * H,
                          o + b0 * H, b1 - b0, H);
      });
      *out_c = new at::Tensor(c_new);
    } else {
      at::Tensor gh = at::addmm(*b_hh, hp, w_t);
      at::Tensor acts = at::empty({B, 3 * H}, x.options());
      at::Tensor ghn = at::empty({B, H}, x.options());
      const float* ip = x.data_ptr<float>();
      float* a = acts.data_ptr<float>();
      const float* ghp = gh.data_ptr<float>();
      const float* hpp = hp.data_ptr<float>();
      float* gn = ghn.data_ptr<float>();
      float* o = h_new.data_ptr<float>();
      over_rows(B, 3 * H, [&](int64_t b0, int64_t b1) {
        gru_forward_rows(ip + b0 * 3 * H, a + b0 * 3 * H, ghp + b0 * 3 * H, hpp + b0 * H,
                         gn + b0 * H, o + b0 * H, b1 - b0, H);
      });
      if (out_c != nullptr) *out_c = nullptr;
    }
    *out_h = new at::Tensor(h_new);
    return nullptr;
  } catch (const std::exception& e) {
    return rnmt_message(e.what());
  } catch (...) {
    return rnmt_message("unknown C++ exception in the fused RNN step");
  }
}

// Whether autograd records operations on this thread now.
int rnmt_grad_enabled() { return c10::GradMode::is_enabled() ? 1 : 0; }

void rnmt_fused_rnn_free_message(char* message) { std::free(message); }

}  // extern "C"
