// The C++ shim's one way of handing an error to Rust: a malloc'ed copy of the message, which
// the Rust side frees with the file's *_free_message function.
#pragma once
#include <cstdlib>
#include <cstring>
#include <string>

inline char* rnmt_message(const std::string& m) {
  char* out = static_cast<char*>(std::malloc(m.size() + 1));
  if (out != nullptr) std::memcpy(out, m.c_str(), m.size() + 1);
  return out;
}
