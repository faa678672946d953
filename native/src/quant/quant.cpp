#include "quant/quant.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "quant/fp16.h"
#include "quant/rounding.h"

namespace edgellm {

const char* dtype_name(DType t) {
  switch (t) {
    case DType::F32: return "F32";
    case DType::F16: return "F16";
    case DType::BF16: return "BF16";
    case DType::Q4_0: return "Q4_0";
    case DType::Q8_0: return "Q8_0";
    case DType::Q4_1: return "Q4_1";
    case DType::Q5_0: return "Q5_0";
    case DType::Q5_1: return "Q5_1";
    case DType::Q8_1: return "Q8_1";
    case DType::Q2_K: return "Q2_K";
    case DType::Q3_K: return "Q3_K";
    case DType::Q4_K: return "Q4_K";
    case DType::Q5_K: return "Q5_K";
    case DType::Q6_K: return "Q6_K";
    case DType::Q8_K: return "Q8_K";
    case DType::IQ4_NL: return "IQ4_NL";
    case DType::IQ4_XS: return "IQ4_XS";
    case DType::Q4_0_X4: return "Q4_0_X4";
    case DType::Q4_K_X4: return "Q4_K_X4";
    case DType::Q6_K_X4: return "Q6_K_X4";
  }
  return "unknown";
}

bool dtype_from_name(const std::string& name, DType* out) {
  for (DType t : kWeightTypes) {
    const char* n = dtype_name(t);
    size_t i = 0;
    while (n[i] && i < name.size() && std::toupper((unsigned char)name[i]) == n[i]) ++i;
    if (!n[i] && i == name.size()) {
      *out = t;
      return true;
    }
  }
  return false;
}

bool dtype_is_known(uint32_t raw) {
  for (DType t : kWeightTypes)
    if ((uint32_t)t == raw) return true;
  return false;
}

// ggml's reference: the scale is the signed value of largest magnitude / -8, so that value
// maps to nibble 0 exactly and the others round to nearest with x/d + 8.5 truncated.
void quantize_row_q4_0_ref(const float* x, block_q4_0* y, int64_t n) {
  const int64_t nb = n / kQK;
  for (int64_t i = 0; i < nb; ++i) {
    float amax;
    const float max = signed_absmax(x + i * kQK, kQK, &amax);
    const float d = max / -8.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = float_to_half(d);
    for (int j = 0; j < kQK / 2; ++j) {
      const float x0 = x[i * kQK + j] * id;
      const float x1 = x[i * kQK + kQK / 2 + j] * id;
      const int xi0 = std::min(15, (int)(int8_t)(x0 + 8.5f));
      const int xi1 = std::min(15, (int)(int8_t)(x1 + 8.5f));
      y[i].qs[j] = (uint8_t)(xi0 | (xi1 << 4));
    }
  }
}

// ggml's reference: d = max|x| / 127, q = round(x / d) (ties away from zero).
void quantize_row_q8_0_ref(const float* x, block_q8_0* y, int64_t n) {
  const int64_t nb = n / kQK;
  for (int64_t i = 0; i < nb; ++i) {
    float amax = 0.0f;
    for (int j = 0; j < kQK; ++j) amax = std::fmax(amax, std::fabs(x[i * kQK + j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = float_to_half(d);
    for (int j = 0; j < kQK; ++j) y[i].qs[j] = (int8_t)std::round(x[i * kQK + j] * id);
  }
}

// ggml's reference: as Q8_0, plus s = d * (sum of the 32 codes) for the minimum term of the
// Q4_1 / Q5_1 dot products.
void quantize_row_q8_1_ref(const float* x, block_q8_1* y, int64_t n) {
  const int64_t nb = n / kQK;
  for (int64_t i = 0; i < nb; ++i) {
    float amax = 0.0f;
    for (int j = 0; j < kQK; ++j) amax = std::fmax(amax, std::fabs(x[i * kQK + j]));
    const float d = amax / 127.0f;
    const float id = d != 0.0f ? 1.0f / d : 0.0f;
    y[i].d = float_to_half(d);
    int sum = 0;
    for (int j = 0; j < kQK; ++j) {
      y[i].qs[j] = (int8_t)std::round(x[i * kQK + j] * id);
      sum += y[i].qs[j];
    }
    y[i].s = float_to_half((float)sum * d);
  }
}

// ggml's reference: the signed value of largest magnitude maps to -127 (iscale = -127 / max),
// codes are clamped above at 127, d = 1 / iscale (f32), bsums are the sums of each 16 codes.
// An all-zero block (or one of zeros and NaNs) is all zeros: ggml writes d and qs and leaves
// bsums unwritten there; zero is their only consistent value.
void quantize_row_q8_K_ref(const float* x, block_q8_K* y, int64_t n) {
  const int64_t nb = n / kQKK;
  for (int64_t i = 0; i < nb; ++i) {
    const float* xb = x + i * kQKK;
    float amax;
    const float max = signed_absmax(xb, kQKK, &amax);
    if (amax == 0.0f) {
      std::memset(&y[i], 0, sizeof y[i]);
      continue;
    }
    const float iscale = -127.0f / max;
    for (int j = 0; j < kQKK; ++j) y[i].qs[j] = (int8_t)std::min(127, nearest_int(iscale * xb[j]));
    for (int g = 0; g < kQKK / 16; ++g) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) sum += y[i].qs[16 * g + l];
      y[i].bsums[g] = (int16_t)sum;
    }
    y[i].d = 1.0f / iscale;
  }
}

void dequantize_row_q4_0(const block_q4_0* x, float* y, int64_t n) {
  const int64_t nb = n / kQK;
  for (int64_t i = 0; i < nb; ++i) {
    const float d = half_to_float(x[i].d);
    for (int j = 0; j < kQK / 2; ++j) {
      y[i * kQK + j] = (float)((x[i].qs[j] & 0x0F) - 8) * d;
      y[i * kQK + kQK / 2 + j] = (float)((x[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void dequantize_row_q8_0(const block_q8_0* x, float* y, int64_t n) {
  const int64_t nb = n / kQK;
  for (int64_t i = 0; i < nb; ++i) {
    const float d = half_to_float(x[i].d);
    for (int j = 0; j < kQK; ++j) y[i * kQK + j] = (float)x[i].qs[j] * d;
  }
}

void convert_row_f32_to_f16(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = float_to_half(x[i]);
}
void convert_row_f16_to_f32(const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = half_to_float(x[i]);
}
void convert_row_f32_to_bf16(const float* x, uint16_t* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = float_to_bf16(x[i]);
}
void convert_row_bf16_to_f32(const uint16_t* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = bf16_to_float(x[i]);
}

void dequantize_row(DType t, const void* row, float* y, int64_t n) {
  switch (t) {
    case DType::F32: {
      const float* s = static_cast<const float*>(row);
      for (int64_t i = 0; i < n; ++i) y[i] = s[i];
      return;
    }
    case DType::F16: return convert_row_f16_to_f32(static_cast<const uint16_t*>(row), y, n);
    case DType::BF16: return convert_row_bf16_to_f32(static_cast<const uint16_t*>(row), y, n);
    case DType::Q4_0: return dequantize_row_q4_0(static_cast<const block_q4_0*>(row), y, n);
    case DType::Q8_0: return dequantize_row_q8_0(static_cast<const block_q8_0*>(row), y, n);
    case DType::Q4_1: return dequantize_row_q4_1(static_cast<const block_q4_1*>(row), y, n);
    case DType::Q5_0: return dequantize_row_q5_0(static_cast<const block_q5_0*>(row), y, n);
    case DType::Q5_1: return dequantize_row_q5_1(static_cast<const block_q5_1*>(row), y, n);
    case DType::Q8_1: return dequantize_row_q8_1(static_cast<const block_q8_1*>(row), y, n);
    case DType::Q2_K: return dequantize_row_q2_K(static_cast<const block_q2_K*>(row), y, n);
    case DType::Q3_K: return dequantize_row_q3_K(static_cast<const block_q3_K*>(row), y, n);
    case DType::Q4_K: return dequantize_row_q4_K(static_cast<const block_q4_K*>(row), y, n);
    case DType::Q5_K: return dequantize_row_q5_K(static_cast<const block_q5_K*>(row), y, n);
    case DType::Q6_K: return dequantize_row_q6_K(static_cast<const block_q6_K*>(row), y, n);
    case DType::Q8_K: return dequantize_row_q8_K(static_cast<const block_q8_K*>(row), y, n);
    case DType::IQ4_NL: return dequantize_row_iq4_nl(static_cast<const block_iq4_nl*>(row), y, n);
    case DType::IQ4_XS: return dequantize_row_iq4_xs(static_cast<const block_iq4_xs*>(row), y, n);
    default: break;
  }
  throw std::invalid_argument(std::string("dequantize_row: no dequantizer for ") + dtype_name(t));
}

void quantize_row(DType t, const float* x, void* row, int64_t n) {
  switch (t) {
    case DType::F32: {
      float* d = static_cast<float*>(row);
      for (int64_t i = 0; i < n; ++i) d[i] = x[i];
      return;
    }
    case DType::F16: return convert_row_f32_to_f16(x, static_cast<uint16_t*>(row), n);
    case DType::BF16: return convert_row_f32_to_bf16(x, static_cast<uint16_t*>(row), n);
    case DType::Q4_0: return quantize_row_q4_0_ref(x, static_cast<block_q4_0*>(row), n);
    case DType::Q8_0: return quantize_row_q8_0_ref(x, static_cast<block_q8_0*>(row), n);
    case DType::Q4_1: return quantize_row_q4_1_ref(x, static_cast<block_q4_1*>(row), n);
    case DType::Q5_0: return quantize_row_q5_0_ref(x, static_cast<block_q5_0*>(row), n);
    case DType::Q5_1: return quantize_row_q5_1_ref(x, static_cast<block_q5_1*>(row), n);
    case DType::Q2_K: return quantize_row_q2_K_ref(x, static_cast<block_q2_K*>(row), n);
    case DType::Q3_K: return quantize_row_q3_K_ref(x, static_cast<block_q3_K*>(row), n);
    case DType::Q4_K: return quantize_row_q4_K_ref(x, static_cast<block_q4_K*>(row), n);
    case DType::Q5_K: return quantize_row_q5_K_ref(x, static_cast<block_q5_K*>(row), n);
    case DType::Q6_K: return quantize_row_q6_K_ref(x, static_cast<block_q6_K*>(row), n);
    case DType::IQ4_NL: return quantize_row_iq4_nl_ref(x, static_cast<block_iq4_nl*>(row), n);
    case DType::IQ4_XS: return quantize_row_iq4_xs_ref(x, static_cast<block_iq4_xs*>(row), n);
    default: break;
  }
  throw std::invalid_argument(std::string("quantize_row: no quantizer for ") + dtype_name(t));
}

}  // namespace edgellm
