#include "gguf/gguf.h"

#include "sys/memory_budget.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <type_traits>

namespace edgellm {

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader assumes a little-endian host (GGUF files are read in place)"
#endif

namespace {

constexpr const char* kCorrupt = "E_MODEL_CORRUPT";
constexpr const char* kUnsupported = "E_MODEL_UNSUPPORTED";
constexpr const char* kNotFound = "E_MODEL_NOT_FOUND";

// Caps that keep a corrupt count from turning into a huge allocation or a deep recursion.
// Real models have a few thousand tensors and a few dozen keys at most.
constexpr uint64_t kMaxTensors = 1u << 20;
constexpr uint64_t kMaxKv = 1u << 20;
constexpr uint64_t kMaxKeyBytes = 65535;      // the spec's limit for keys
constexpr uint64_t kMaxTensorNameBytes = 64;  // the spec's limit for tensor names (ggml's GGML_MAX_NAME)
constexpr int kMaxArrayDepth = 4;             // arrays of arrays of ... (the spec allows nesting)
constexpr int kMaxDims = 4;

// Pre-GGUF magics, as the first four bytes read little-endian.
constexpr uint32_t kMagicGguf = 0x46554747;  // "GGUF"
constexpr uint32_t kMagicGgml = 0x67676d6c;  // "lmgg": unversioned ggml
constexpr uint32_t kMagicGgmf = 0x67676d66;  // "fmgg"
constexpr uint32_t kMagicGgjt = 0x67676a74;  // "tjgg"
constexpr uint32_t kMagicGgla = 0x67676c61;  // "algg": ggml LoRA adapter

bool add_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_add_overflow(a, b, out); }
bool mul_overflows(uint64_t a, uint64_t b, uint64_t* out) { return __builtin_mul_overflow(a, b, out); }

std::string quoted(std::string_view s) {
  std::string out = "'";
  for (char c : s.substr(0, 200)) {
    const unsigned char u = (unsigned char)c;
    if (u < 0x20 || u == 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", u);
      out += buf;
    } else {
      out += c;
    }
  }
  if (s.size() > 200) out += "...";
  return out + "'";
}

std::string hex4(const uint8_t* p, size_t n) {
  std::string out;
  char buf[4];
  for (size_t i = 0; i < n; ++i) {
    std::snprintf(buf, sizeof buf, i ? " %02x" : "%02x", p[i]);
    out += buf;
  }
  return out;
}

uint32_t bswap32(uint32_t v) { return __builtin_bswap32(v); }

}  // namespace

// ---------------------------------------------------------------------------------------------
// Type names

const char* gguf_value_type_name(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8: return "uint8";
    case GgufValueType::I8: return "int8";
    case GgufValueType::U16: return "uint16";
    case GgufValueType::I16: return "int16";
    case GgufValueType::U32: return "uint32";
    case GgufValueType::I32: return "int32";
    case GgufValueType::F32: return "float32";
    case GgufValueType::BOOL: return "bool";
    case GgufValueType::STRING: return "string";
    case GgufValueType::ARRAY: return "array";
    case GgufValueType::U64: return "uint64";
    case GgufValueType::I64: return "int64";
    case GgufValueType::F64: return "float64";
  }
  return "unknown";
}

size_t gguf_value_type_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::U8: case GgufValueType::I8: case GgufValueType::BOOL: return 1;
    case GgufValueType::U16: case GgufValueType::I16: return 2;
    case GgufValueType::U32: case GgufValueType::I32: case GgufValueType::F32: return 4;
    case GgufValueType::U64: case GgufValueType::I64: case GgufValueType::F64: return 8;
    case GgufValueType::STRING: case GgufValueType::ARRAY: return 0;
  }
  return 0;
}

std::string ggml_type_name(uint32_t raw) {
  // ggml's type numbering; gaps are types ggml removed.
  static const char* const names[] = {
      "F32",     "F16",    "Q4_0",    "Q4_1",   "Q4_2",    "Q4_3",   "Q5_0",     "Q5_1",
      "Q8_0",    "Q8_1",   "Q2_K",    "Q3_K",   "Q4_K",    "Q5_K",   "Q6_K",     "Q8_K",
      "IQ2_XXS", "IQ2_XS", "IQ3_XXS", "IQ1_S",  "IQ4_NL",  "IQ3_S",  "IQ2_S",    "IQ4_XS",
      "I8",      "I16",    "I32",     "I64",    "F64",     "IQ1_M",  "BF16",     "Q4_0_4_4",
      "Q4_0_4_8", "Q4_0_8_8", "TQ1_0", "TQ2_0", "IQ4_NL_4_4", "IQ4_NL_4_8", "IQ4_NL_8_8", "MXFP4",
      "NVFP4",   "Q1_0",   "Q2_0",
  };
  if (raw < sizeof names / sizeof names[0]) return names[raw];
  return "type " + std::to_string(raw);
}

// "F32, F16, ..., IQ4_NL and IQ4_XS": every weight type a model may hold (kWeightTypes).
static std::string supported_weight_types() {
  std::string out;
  const size_t n = sizeof kWeightTypes / sizeof kWeightTypes[0];
  for (size_t i = 0; i < n; ++i) {
    if (i > 0) out += i + 1 == n ? " and " : ", ";
    out += dtype_name(kWeightTypes[i]);
  }
  return out;
}

bool ggml_type_geometry(uint32_t raw, int64_t* block_elems, size_t* block_bytes) {
  if (dtype_is_known(raw)) {
    *block_elems = dtype_block_elems((DType)raw);
    *block_bytes = dtype_block_bytes((DType)raw);
    return true;
  }
  // ggml_blck_size / ggml_type_size of the types edgellm does not run (ggml v0.4.0, as
  // node-llama-cpp 3.21.1 ships it); 0 bytes: removed from GGUF (Q4_2, Q4_3, the repacked 4x4/4x8/8x8).
  static const struct {
    int64_t elems;
    size_t bytes;
  } geometry[] = {
      {1, 4},    {1, 2},     {32, 18},  {32, 20},  {0, 0},    {0, 0},    {32, 22},  {32, 24},   // F32 .. Q5_1
      {32, 34},  {32, 36},   {256, 84}, {256, 110}, {256, 144}, {256, 176}, {256, 210}, {256, 292},  // Q8_0 .. Q8_K
      {256, 66}, {256, 74},  {256, 98}, {256, 50}, {32, 18},  {256, 110}, {256, 82}, {256, 136},  // IQ2_XXS .. IQ4_XS
      {1, 1},    {1, 2},     {1, 4},    {1, 8},    {1, 8},    {256, 56}, {1, 2},    {0, 0},     // I8 .. Q4_0_4_4
      {0, 0},    {0, 0},     {256, 54}, {256, 66}, {0, 0},    {0, 0},    {0, 0},    {32, 17},   // .. MXFP4
      {64, 36},  {128, 18},  {64, 18},                                                          // NVFP4, Q1_0, Q2_0
  };
  if (raw >= sizeof geometry / sizeof geometry[0] || geometry[raw].bytes == 0) return false;
  *block_elems = geometry[raw].elems;
  *block_bytes = geometry[raw].bytes;
  return true;
}

// The llama.cpp mix (`edgellm quantize --type`) closest in size to a type edgellm does not run.
static const char* nearest_mix(uint32_t raw) {
  const std::string n = ggml_type_name(raw);
  if (n.rfind("IQ1", 0) == 0 || n.rfind("IQ2", 0) == 0 || n.rfind("TQ", 0) == 0 || n == "Q1_0" || n == "Q2_0")
    return "q2_k";
  if (n.rfind("IQ3", 0) == 0) return "q3_k_m";
  if (n == "MXFP4" || n == "NVFP4") return "iq4_xs";
  return "q8_0";
}

std::string unrunnable_type_advice(uint32_t raw) {
  return "edgellm does not support " + ggml_type_name(raw) + " yet (it runs " + supported_weight_types() +
         "). Use a file of the model in one of those types (e.g. Q4_K_M or Q8_0), or re-quantize its F16/F32 original: "
         "`edgellm quantize MODEL-F16.gguf OUT.gguf --type " + nearest_mix(raw) + "`";
}

static bool is_valid_value_type(uint32_t raw) { return raw <= (uint32_t)GgufValueType::F64; }

static bool is_signed_type(GgufValueType t) {
  return t == GgufValueType::I8 || t == GgufValueType::I16 || t == GgufValueType::I32 ||
         t == GgufValueType::I64;
}
static bool is_unsigned_type(GgufValueType t) {
  return t == GgufValueType::U8 || t == GgufValueType::U16 || t == GgufValueType::U32 ||
         t == GgufValueType::U64;
}
static bool is_float_type(GgufValueType t) { return t == GgufValueType::F32 || t == GgufValueType::F64; }

// ---------------------------------------------------------------------------------------------
// GgufValue

bool GgufValue::is_integer() const { return is_signed_type(type) || is_unsigned_type(type); }
bool GgufValue::is_number() const { return is_integer() || is_float_type(type); }

namespace {
// Reads element i of a numeric/bool array as (signed value, unsigned value, float value).
struct Elem {
  bool negative = false;
  uint64_t u = 0;  // magnitude if !negative
  int64_t i = 0;
  double f = 0;
  bool is_float = false;
};
Elem read_elem(GgufValueType t, const uint8_t* p) {
  Elem e;
  switch (t) {
    case GgufValueType::U8: case GgufValueType::BOOL: e.u = p[0]; break;
    case GgufValueType::I8: e.i = (int8_t)p[0]; break;
    case GgufValueType::U16: { uint16_t v; std::memcpy(&v, p, 2); e.u = v; break; }
    case GgufValueType::I16: { int16_t v; std::memcpy(&v, p, 2); e.i = v; break; }
    case GgufValueType::U32: { uint32_t v; std::memcpy(&v, p, 4); e.u = v; break; }
    case GgufValueType::I32: { int32_t v; std::memcpy(&v, p, 4); e.i = v; break; }
    case GgufValueType::U64: { uint64_t v; std::memcpy(&v, p, 8); e.u = v; break; }
    case GgufValueType::I64: { int64_t v; std::memcpy(&v, p, 8); e.i = v; break; }
    case GgufValueType::F32: { float v; std::memcpy(&v, p, 4); e.f = v; e.is_float = true; break; }
    case GgufValueType::F64: { double v; std::memcpy(&v, p, 8); e.f = v; e.is_float = true; break; }
    default: break;
  }
  if (is_signed_type(t)) {
    e.negative = e.i < 0;
    if (!e.negative) e.u = (uint64_t)e.i;
    e.f = (double)e.i;
  } else if (!e.is_float) {
    e.i = e.u > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)e.u;
    e.f = (double)e.u;
  }
  return e;
}
}  // namespace

double GgufValue::number_at(uint64_t idx) const {
  return read_elem(elem_type, raw + idx * gguf_value_type_size(elem_type)).f;
}
int64_t GgufValue::int_at(uint64_t idx) const {
  return read_elem(elem_type, raw + idx * gguf_value_type_size(elem_type)).i;
}
uint64_t GgufValue::uint_at(uint64_t idx) const {
  const Elem e = read_elem(elem_type, raw + idx * gguf_value_type_size(elem_type));
  return e.negative ? 0 : e.u;
}

std::string GgufValue::type_string() const {
  if (type != GgufValueType::ARRAY) return gguf_value_type_name(type);
  std::string inner;
  if (elem_type == GgufValueType::ARRAY) {
    // Nested arrays may differ; name the first element's type (or plain "array" when empty).
    inner = items.empty() ? "array" : items[0].type_string();
  } else {
    inner = gguf_value_type_name(elem_type);
  }
  return "array[" + inner + "]";
}

// ---------------------------------------------------------------------------------------------
// The parser: a cursor over [base, base + size) that checks before it reads.

class GgufParser {
 public:
  GgufParser(GgufFile& f, UnknownTensorTypes unknown) : f_(f), base_(f.base_), size_(f.size_), unknown_(unknown) {}

  void parse();

 private:
  [[noreturn]] void fail(const char* code, const std::string& what) const {
    throw ModelError(code, f_.path_ + ": " + what);
  }
  // Throws E_MODEL_CORRUPT if n bytes are not available at the cursor; `what` says what was read.
  void need(uint64_t n, const std::string& what) const {
    if (n > size_ - pos_) {
      fail(kCorrupt, what + " runs past the end of the file (needs " + std::to_string(n) +
                         " bytes at offset " + std::to_string(pos_) + ", file size " +
                         std::to_string(size_) + "); the file is truncated or corrupt");
    }
  }
  template <typename T>
  T read(const std::string& what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string_view read_string(const std::string& what, uint64_t max_len) {
    const uint64_t len = read<uint64_t>(what + " length");
    if (len > max_len) {
      fail(kCorrupt, what + " has length " + std::to_string(len) + ", more than the " +
                         std::to_string(max_len) + " bytes allowed");
    }
    need(len, what + " (" + std::to_string(len) + " bytes)");
    std::string_view s(reinterpret_cast<const char*>(base_ + pos_), (size_t)len);
    pos_ += len;
    return s;
  }

  void parse_header();
  void parse_value(GgufValue& v, GgufValueType type, const std::string& what, int depth);
  void parse_kv(uint64_t i);
  void apply_alignment();
  void parse_tensor_info(uint64_t i);
  void check_tensor_data();

  GgufFile& f_;
  const uint8_t* base_;
  uint64_t size_;
  uint64_t pos_ = 0;
  UnknownTensorTypes unknown_;
  uint32_t version_ = 0;
  uint64_t n_tensors_ = 0;
  uint64_t n_kv_ = 0;
  std::vector<uint64_t> rel_offsets_;  // tensor offsets relative to the data section
  std::vector<std::string_view> tensor_names_;
};

void GgufParser::parse_header() {
  if (size_ == 0) fail(kCorrupt, "the file is empty");
  if (size_ < 4) fail(kCorrupt, "the file is " + std::to_string(size_) + " bytes, too short to be a model");
  uint32_t magic;
  std::memcpy(&magic, base_, 4);
  if (magic == kMagicGgml || magic == kMagicGgmf || magic == kMagicGgjt || magic == kMagicGgla) {
    const char* kind = magic == kMagicGgml ? "GGML" : magic == kMagicGgmf ? "GGMF" : magic == kMagicGgjt ? "GGJT" : "GGLA";
    std::string version;
    if (magic != kMagicGgml && size_ >= 8) {
      uint32_t v;
      std::memcpy(&v, base_ + 4, 4);
      version = " v" + std::to_string(v);
    }
    fail(kUnsupported, std::string("this is a pre-GGUF GGML/GGJT model file (") + kind + version +
                           "); edgellm reads only GGUF v2/v3. Convert it with llama.cpp's "
                           "convert_llama_ggml_to_gguf.py (--input IN.bin --output OUT.gguf), or "
                           "download a GGUF version of the model");
  }
  if (magic == bswap32(kMagicGguf)) {
    fail(kUnsupported, "this is a big-endian GGUF file; edgellm reads little-endian GGUF. Convert it "
                       "with gguf-py's gguf_convert_endian.py (FILE little)");
  }
  if (magic != kMagicGguf) {
    fail(kUnsupported, "not a GGUF model file (the first bytes are " + hex4(base_, 4) +
                           ", a GGUF file starts with 'GGUF')");
  }
  pos_ = 4;
  version_ = read<uint32_t>("the GGUF version");
  if (version_ == 1) {
    fail(kUnsupported, "GGUF v1 is obsolete and no longer supported (by edgellm or llama.cpp); "
                       "convert the original model again with a current llama.cpp "
                       "(convert_hf_to_gguf.py) to get a GGUF v3 file");
  }
  if ((version_ & 0xFFFF) == 0 && bswap32(version_) >= 1 && bswap32(version_) <= 0xFFFF) {
    fail(kUnsupported, "this is a big-endian GGUF file (version " + std::to_string(bswap32(version_)) +
                           "); edgellm reads little-endian GGUF. Convert it with gguf-py's "
                           "gguf_convert_endian.py (FILE little)");
  }
  if (version_ != 2 && version_ != 3) {
    fail(kUnsupported, "GGUF version " + std::to_string(version_) + " is not supported (edgellm reads "
                       "GGUF v2 and v3)");
  }
  f_.version_ = version_;
  n_tensors_ = read<uint64_t>("the tensor count");
  n_kv_ = read<uint64_t>("the metadata key count");
  // Every tensor info takes at least 8 (name length) + 4 (dims) + 8 (one dim) + 4 (type) + 8
  // (offset) bytes, every key-value pair at least 8 + 4 + 1: a count the file cannot hold is
  // refused here, before anything is allocated for it.
  if (n_kv_ > kMaxKv || n_kv_ > (size_ - pos_) / 13) {
    fail(kCorrupt, "the header claims " + std::to_string(n_kv_) + " metadata keys, more than a " +
                       std::to_string(size_) + "-byte file can hold");
  }
  if (n_tensors_ > kMaxTensors || n_tensors_ > (size_ - pos_) / 32) {
    fail(kCorrupt, "the header claims " + std::to_string(n_tensors_) + " tensors, more than a " +
                       std::to_string(size_) + "-byte file can hold");
  }
}

void GgufParser::parse_value(GgufValue& v, GgufValueType type, const std::string& what, int depth) {
  v.type = type;
  switch (type) {
    case GgufValueType::U8: v.u = read<uint8_t>(what); break;
    case GgufValueType::I8: v.i = read<int8_t>(what); break;
    case GgufValueType::U16: v.u = read<uint16_t>(what); break;
    case GgufValueType::I16: v.i = read<int16_t>(what); break;
    case GgufValueType::U32: v.u = read<uint32_t>(what); break;
    case GgufValueType::I32: v.i = read<int32_t>(what); break;
    case GgufValueType::U64: v.u = read<uint64_t>(what); break;
    case GgufValueType::I64: v.i = read<int64_t>(what); break;
    case GgufValueType::F32: v.f = read<float>(what); break;
    case GgufValueType::F64: v.f = read<double>(what); break;
    case GgufValueType::BOOL: {
      const uint8_t b = read<uint8_t>(what);
      if (b > 1) fail(kCorrupt, what + " is a bool with the value " + std::to_string(b) + " (must be 0 or 1)");
      v.u = b;
      break;
    }
    case GgufValueType::STRING: v.str = read_string(what, UINT64_MAX); break;
    case GgufValueType::ARRAY: {
      if (depth >= kMaxArrayDepth) {
        fail(kUnsupported, what + " nests arrays more than " + std::to_string(kMaxArrayDepth) + " deep");
      }
      const uint32_t et = read<uint32_t>(what + " element type");
      if (!is_valid_value_type(et)) {
        fail(kCorrupt, what + " has an unknown array element type " + std::to_string(et));
      }
      v.elem_type = (GgufValueType)et;
      v.count = read<uint64_t>(what + " element count");
      // Smallest encoding of one element: its scalar size, 8 (string length), 12 (array header).
      const size_t esize = gguf_value_type_size(v.elem_type);
      const uint64_t min_bytes = esize ? esize : v.elem_type == GgufValueType::STRING ? 8 : 12;
      if (v.count > (size_ - pos_) / min_bytes) {
        fail(kCorrupt, what + " claims " + std::to_string(v.count) + " elements of type " +
                           gguf_value_type_name(v.elem_type) + ", more than the " +
                           std::to_string(size_ - pos_) + " bytes left in the file can hold");
      }
      if (esize) {
        if (v.elem_type == GgufValueType::BOOL) {
          for (uint64_t k = 0; k < v.count; ++k) {
            if (base_[pos_ + k] > 1) {
              fail(kCorrupt, what + " element " + std::to_string(k) + " is a bool with the value " +
                                 std::to_string(base_[pos_ + k]) + " (must be 0 or 1)");
            }
          }
        }
        v.raw = base_ + pos_;
        pos_ += v.count * esize;  // cannot overflow: count * esize <= size - pos
      } else if (v.elem_type == GgufValueType::STRING) {
        v.strings.reserve((size_t)v.count);
        for (uint64_t k = 0; k < v.count; ++k) {
          v.strings.push_back(read_string(what + " element " + std::to_string(k), UINT64_MAX));
        }
      } else {
        v.items.reserve((size_t)v.count);
        for (uint64_t k = 0; k < v.count; ++k) {
          v.items.emplace_back();
          parse_value(v.items.back(), GgufValueType::ARRAY, what + " element " + std::to_string(k), depth + 1);
        }
      }
      break;
    }
  }
}

void GgufParser::parse_kv(uint64_t i) {
  const std::string entry = "metadata entry #" + std::to_string(i);
  const std::string_view key = read_string(entry + " key", kMaxKeyBytes);
  const std::string what = "metadata key " + quoted(key);
  if (f_.meta_.index_.count(key)) {
    fail(kCorrupt, what + " appears more than once (duplicate key, entry #" + std::to_string(i) + ")");
  }
  const uint32_t type = read<uint32_t>(what + " value type");
  if (!is_valid_value_type(type)) {
    fail(kCorrupt, what + " has an unknown value type " + std::to_string(type));
  }
  GgufMetadata::Entry e;
  e.key = key;
  parse_value(e.value, (GgufValueType)type, what, 0);
  f_.meta_.index_.emplace(key, f_.meta_.entries_.size());
  f_.meta_.entries_.push_back(std::move(e));
}

void GgufParser::apply_alignment() {
  const GgufValue* a = f_.meta_.find("general.alignment");
  if (!a) return;
  if (!a->is_integer()) {
    fail(kCorrupt, std::string("metadata key 'general.alignment' has type ") + a->type_string() +
                       ", expected an integer");
  }
  const bool neg = is_signed_type(a->type) && a->i < 0;
  const uint64_t v = is_signed_type(a->type) ? (uint64_t)a->i : a->u;
  if (neg || v == 0 || v > UINT32_MAX || (v & (v - 1)) != 0) {
    fail(kCorrupt, "metadata key 'general.alignment' is " +
                       (neg ? std::to_string(a->i) : std::to_string(v)) +
                       "; it must be a nonzero power of two");
  }
  f_.alignment_ = (uint32_t)v;
}

void GgufParser::parse_tensor_info(uint64_t i) {
  const std::string entry = "tensor info #" + std::to_string(i);
  const std::string_view name = read_string(entry + " name", kMaxTensorNameBytes);
  const std::string what = "tensor " + quoted(name);
  if (f_.tensor_index_.count(name)) fail(kCorrupt, what + " appears more than once (duplicate tensor name)");
  GgufTensor t;
  t.name = std::string(name);
  const uint32_t n_dims = read<uint32_t>(what + " dimension count");
  if (n_dims == 0 || n_dims > (uint32_t)kMaxDims) {
    fail(kCorrupt, what + " has " + std::to_string(n_dims) + " dimensions (must be 1 to " +
                       std::to_string(kMaxDims) + ")");
  }
  t.n_dims = (int)n_dims;
  uint64_t n_elements = 1;
  for (uint32_t d = 0; d < n_dims; ++d) {
    const uint64_t ne = read<uint64_t>(what + " dimension " + std::to_string(d));
    if (ne == 0 || ne > (uint64_t)INT64_MAX) {
      fail(kCorrupt, what + " has dimension " + std::to_string(d) + " = " + std::to_string(ne) +
                         " (must be at least 1)");
    }
    if (mul_overflows(n_elements, ne, &n_elements) || n_elements > (uint64_t)INT64_MAX) {
      fail(kCorrupt, what + " has more elements than fit in 64 bits (its shape is corrupt)");
    }
    t.ne[d] = (int64_t)ne;
  }
  const uint32_t type = read<uint32_t>(what + " type");
  const std::string shape_note = " (" + ggml_type_name(type) + ")";
  int64_t block = 0;
  size_t block_bytes = 0;
  if (!ggml_type_geometry(type, &block, &block_bytes)) {
    fail(kUnsupported, what + " has type " + ggml_type_name(type) +
                           ", which is not a tensor type of GGUF files (ggml does not define it, or removed it)");
  }
  if (!dtype_is_known(type)) {
    if (unknown_ == UnknownTensorTypes::Refuse) {
      fail(kUnsupported, what + " has type " + ggml_type_name(type) + ": " + unrunnable_type_advice(type));
    }
    t.runnable = false;
  }
  t.type = (DType)type;
  if (t.ne[0] % block != 0) {
    fail(kCorrupt, what + shape_note + ": row of " + std::to_string(t.ne[0]) +
                       " elements is not a multiple of the block size " + std::to_string(block));
  }
  // bytes = rows * row_bytes; n_elements fits in int64, the byte count may still overflow.
  const uint64_t row_bytes = (uint64_t)(t.ne[0] / block) * block_bytes;
  if (mul_overflows(row_bytes, n_elements / (uint64_t)t.ne[0], &t.bytes)) {
    fail(kCorrupt, what + shape_note + " is larger than 2^64 bytes (its shape is corrupt)");
  }
  const uint64_t rel = read<uint64_t>(what + " data offset");
  rel_offsets_.push_back(rel);
  tensor_names_.push_back(name);
  f_.tensor_index_.emplace(name, f_.tensors_.size());
  f_.tensors_.push_back(std::move(t));
}

void GgufParser::check_tensor_data() {
  const uint64_t align = f_.alignment_;
  // The data section starts at the first aligned offset after the tensor infos.
  uint64_t data = pos_;
  if (data % align) {
    if (add_overflows(data, align - data % align, &data)) fail(kCorrupt, "the data section offset overflows");
  }
  f_.data_offset_ = data;
  if (f_.tensors_.empty()) return;  // a vocabulary-only file need not carry the padding
  if (data > size_) {
    fail(kCorrupt, "the tensor data section would start at offset " + std::to_string(data) +
                       ", past the end of the file (size " + std::to_string(size_) + "); the file is truncated");
  }
  const uint64_t data_size = size_ - data;
  std::vector<size_t> order(f_.tensors_.size());
  for (size_t k = 0; k < order.size(); ++k) {
    GgufTensor& t = f_.tensors_[k];
    const uint64_t rel = rel_offsets_[k];
    const std::string what = "tensor " + quoted(tensor_names_[k]) + " (" + ggml_type_name((uint32_t)t.type) + ")";
    if (rel % align) {
      fail(kCorrupt, what + ": data offset " + std::to_string(rel) + " is not a multiple of the alignment " +
                         std::to_string(align));
    }
    if (rel > data_size || t.bytes > data_size - rel) {
      fail(kCorrupt, what + ": its " + std::to_string(t.bytes) + " bytes at data offset " + std::to_string(rel) +
                         " run past the end of the file (data section holds " + std::to_string(data_size) +
                         " bytes); the file is truncated or corrupt");
    }
    t.offset = data + rel;
    t.data = base_ + t.offset;
    order[k] = k;
  }
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return rel_offsets_[a] < rel_offsets_[b]; });
  for (size_t k = 1; k < order.size(); ++k) {
    const GgufTensor& prev = f_.tensors_[order[k - 1]];
    const GgufTensor& cur = f_.tensors_[order[k]];
    if (cur.offset < prev.offset + prev.bytes) {
      fail(kCorrupt, "tensor " + quoted(tensor_names_[order[k]]) + " (data offset " +
                         std::to_string(rel_offsets_[order[k]]) + ") overlaps tensor " +
                         quoted(tensor_names_[order[k - 1]]) + " (data offset " +
                         std::to_string(rel_offsets_[order[k - 1]]) + ", " + std::to_string(prev.bytes) + " bytes)");
    }
  }
}

void GgufParser::parse() {
  parse_header();
  f_.meta_.file_ = f_.path_;
  f_.meta_.entries_.reserve((size_t)n_kv_);
  for (uint64_t i = 0; i < n_kv_; ++i) parse_kv(i);
  apply_alignment();
  f_.tensors_.reserve((size_t)n_tensors_);
  rel_offsets_.reserve((size_t)n_tensors_);
  tensor_names_.reserve((size_t)n_tensors_);
  for (uint64_t i = 0; i < n_tensors_; ++i) parse_tensor_info(i);
  check_tensor_data();
}

// ---------------------------------------------------------------------------------------------
// GgufFile

GgufFile GgufFile::open(const std::string& path, UnknownTensorTypes unknown) {
  GgufFile f;
  f.path_ = path;
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    throw ModelError(kNotFound, path + ": cannot open the model file (" + std::strerror(err) + ")");
  }
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    throw ModelError(kNotFound, path + ": not a regular file (a model must be a .gguf file)");
  }
  f.size_ = (uint64_t)st.st_size;
  if (f.size_ > 0) {
    if (f.size_ > (uint64_t)SIZE_MAX) {
      ::close(fd);
      throw ModelError(kUnsupported, path + ": the file is " + std::to_string(f.size_) +
                                         " bytes, too large to map on this system");
    }
    void* p = mmap(nullptr, (size_t)f.size_, PROT_READ, MAP_PRIVATE, fd, 0);
    if (p == MAP_FAILED) {
      const int err = errno;
      ::close(fd);
      throw ModelError(kNotFound, path + ": cannot map the model file (" + std::strerror(err) + ")");
    }
    f.base_ = static_cast<const uint8_t*>(p);
    f.mapped_ = true;
  }
  ::close(fd);  // the mapping keeps the file alive
  GgufParser(f, unknown).parse();
  return f;
}

GgufFile GgufFile::from_bytes(std::vector<uint8_t> bytes, std::string name, UnknownTensorTypes unknown) {
  GgufFile f;
  f.path_ = std::move(name);
  f.owned_ = std::move(bytes);
  f.base_ = f.owned_.data();
  f.size_ = f.owned_.size();
  GgufParser(f, unknown).parse();
  return f;
}

GgufFile::GgufFile(GgufFile&& o) noexcept { *this = std::move(o); }

GgufFile& GgufFile::operator=(GgufFile&& o) noexcept {
  if (this != &o) {
    release();
    path_ = std::move(o.path_);
    base_ = o.base_;
    size_ = o.size_;
    mapped_ = o.mapped_;
    owned_ = std::move(o.owned_);  // the heap buffer moves, so views into it stay valid
    version_ = o.version_;
    alignment_ = o.alignment_;
    data_offset_ = o.data_offset_;
    meta_ = std::move(o.meta_);
    tensors_ = std::move(o.tensors_);
    tensor_index_ = std::move(o.tensor_index_);
    o.base_ = nullptr;
    o.size_ = 0;
    o.mapped_ = false;
  }
  return *this;
}

GgufFile::~GgufFile() { release(); }

void GgufFile::release() noexcept {
  if (mapped_ && base_) munmap(const_cast<uint8_t*>(base_), (size_t)size_);
  base_ = nullptr;
  mapped_ = false;
}

const GgufTensor* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufTensor& GgufFile::tensor(std::string_view name) const {
  if (const GgufTensor* t = find_tensor(name)) return *t;
  throw ModelError(kCorrupt, path_ + ": the model has no tensor " + quoted(name) +
                                 " (the file is incomplete, or not a model of the architecture it claims)");
}

bool GgufFile::prefetch() const {
  if (!mapped_ || data_offset_ >= size_) return false;
  if (size_ - data_offset_ > memory_budget_bytes()) return false;
  advise_will_need(base_ + data_offset_, (size_t)(size_ - data_offset_));
  return true;
}

namespace {

void advise(const uint8_t* base, uint64_t size, const void* p, size_t bytes, int advice) {
  const auto* b = static_cast<const uint8_t*>(p);
  if (bytes == 0 || b < base || b + bytes > base + size) return;
  const uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
  const uintptr_t lo = (uintptr_t)b & ~(page - 1), hi = ((uintptr_t)b + bytes + page - 1) & ~(page - 1);
  madvise(reinterpret_cast<void*>(lo), hi - lo, advice);
}

}  // namespace

void GgufFile::advise_random(const void* p, size_t bytes) const {
  if (mapped_) advise(base_, size_, p, bytes, MADV_RANDOM);
}

void GgufFile::advise_will_need(const void* p, size_t bytes) const {
  if (mapped_) advise(base_, size_, p, bytes, MADV_WILLNEED);
}

// ---------------------------------------------------------------------------------------------
// GgufMetadata

const GgufValue* GgufMetadata::find(std::string_view key) const {
  auto it = index_.find(key);
  return it == index_.end() ? nullptr : &entries_[it->second].value;
}

void GgufMetadata::mismatch(std::string_view key, const GgufValue& v, const char* expected) const {
  throw ModelError(kCorrupt, file_ + ": metadata key " + quoted(key) + " has type " + v.type_string() +
                                 ", expected " + expected);
}

void GgufMetadata::missing(std::string_view key) const {
  throw ModelError(kCorrupt, file_ + ": the required metadata key " + quoted(key) + " is missing");
}

const GgufValue& GgufMetadata::require(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) missing(key);
  return *v;
}

namespace {

// An integer value as sign + magnitude, for range checks against any target type.
template <typename T>
bool int_fits(bool negative, uint64_t mag, int64_t sval, T* out) {
  if (negative) {
    if (!std::numeric_limits<T>::is_signed || sval < (int64_t)std::numeric_limits<T>::min()) return false;
    *out = (T)sval;
    return true;
  }
  if (mag > (uint64_t)std::numeric_limits<T>::max()) return false;
  *out = (T)mag;
  return true;
}

template <typename T>
const char* int_type_label() {
  if (std::is_same<T, uint32_t>::value) return "an integer in the uint32 range";
  if (std::is_same<T, int32_t>::value) return "an integer in the int32 range";
  if (std::is_same<T, uint64_t>::value) return "an integer in the uint64 range";
  return "an integer in the int64 range";
}

}  // namespace

// Integer getters: any integer type, range-checked.
#define EDGELLM_INT_GETTERS(NAME, T)                                                               \
  std::optional<T> GgufMetadata::opt_##NAME(std::string_view key) const {                          \
    const GgufValue* v = find(key);                                                                \
    if (!v) return std::nullopt;                                                                   \
    if (!v->is_integer()) mismatch(key, *v, int_type_label<T>());                                  \
    const bool neg = is_signed_type(v->type) && v->i < 0;                                          \
    const uint64_t mag = is_signed_type(v->type) ? (neg ? 0 : (uint64_t)v->i) : v->u;              \
    T out{};                                                                                       \
    if (!int_fits<T>(neg, mag, v->i, &out)) {                                                      \
      throw ModelError(kCorrupt, file_ + ": metadata key " + quoted(key) + " is " +                \
                                     (neg ? std::to_string(v->i) : std::to_string(mag)) +          \
                                     ", out of range for " + int_type_label<T>());                 \
    }                                                                                              \
    return out;                                                                                    \
  }                                                                                                \
  T GgufMetadata::get_##NAME(std::string_view key) const {                                         \
    require(key);                                                                                  \
    return *opt_##NAME(key);                                                                       \
  }                                                                                                \
  T GgufMetadata::get_##NAME(std::string_view key, T fallback) const {                             \
    return opt_##NAME(key).value_or(fallback);                                                     \
  }

EDGELLM_INT_GETTERS(u32, uint32_t)
EDGELLM_INT_GETTERS(i32, int32_t)
EDGELLM_INT_GETTERS(u64, uint64_t)
EDGELLM_INT_GETTERS(i64, int64_t)
#undef EDGELLM_INT_GETTERS

std::optional<double> GgufMetadata::opt_f64(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (is_float_type(v->type)) return v->f;
  if (is_signed_type(v->type)) return (double)v->i;
  if (is_unsigned_type(v->type)) return (double)v->u;
  mismatch(key, *v, "a number");
}
double GgufMetadata::get_f64(std::string_view key) const {
  require(key);
  return *opt_f64(key);
}
std::optional<float> GgufMetadata::opt_f32(std::string_view key) const {
  const std::optional<double> d = opt_f64(key);
  if (!d) return std::nullopt;
  return (float)*d;
}
float GgufMetadata::get_f32(std::string_view key) const { return (float)get_f64(key); }
float GgufMetadata::get_f32(std::string_view key, float fallback) const { return opt_f32(key).value_or(fallback); }

std::optional<bool> GgufMetadata::opt_bool(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufValueType::BOOL) mismatch(key, *v, "bool");
  return v->u != 0;
}
bool GgufMetadata::get_bool(std::string_view key) const {
  require(key);
  return *opt_bool(key);
}
bool GgufMetadata::get_bool(std::string_view key, bool fallback) const { return opt_bool(key).value_or(fallback); }

std::optional<std::string> GgufMetadata::opt_string(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufValueType::STRING) mismatch(key, *v, "string");
  return std::string(v->str);
}
std::string GgufMetadata::get_string(std::string_view key) const {
  require(key);
  return *opt_string(key);
}
std::string GgufMetadata::get_string(std::string_view key, std::string fallback) const {
  std::optional<std::string> s = opt_string(key);
  return s ? std::move(*s) : std::move(fallback);
}

std::optional<std::vector<std::string>> GgufMetadata::opt_str_array(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufValueType::ARRAY || v->elem_type != GgufValueType::STRING) mismatch(key, *v, "array[string]");
  return std::vector<std::string>(v->strings.begin(), v->strings.end());
}
std::vector<std::string> GgufMetadata::get_str_array(std::string_view key) const {
  require(key);
  return *opt_str_array(key);
}

std::optional<std::vector<float>> GgufMetadata::opt_f32_array(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufValueType::ARRAY || !v->raw || v->elem_type == GgufValueType::BOOL) {
    mismatch(key, *v, "an array of numbers");
  }
  std::vector<float> out((size_t)v->count);
  for (uint64_t k = 0; k < v->count; ++k) out[k] = (float)v->number_at(k);
  return out;
}
std::vector<float> GgufMetadata::get_f32_array(std::string_view key) const {
  require(key);
  return *opt_f32_array(key);
}

std::optional<std::vector<int32_t>> GgufMetadata::opt_i32_array(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) return std::nullopt;
  if (v->type != GgufValueType::ARRAY || !(is_signed_type(v->elem_type) || is_unsigned_type(v->elem_type))) {
    mismatch(key, *v, "an array of integers");
  }
  std::vector<int32_t> out((size_t)v->count);
  const size_t es = gguf_value_type_size(v->elem_type);
  for (uint64_t k = 0; k < v->count; ++k) {
    const Elem e = read_elem(v->elem_type, v->raw + k * es);
    if (!int_fits<int32_t>(e.negative, e.u, e.i, &out[k])) {
      throw ModelError(kCorrupt, file_ + ": metadata key " + quoted(key) + " element " + std::to_string(k) +
                                     " is out of range for int32");
    }
  }
  return out;
}
std::vector<int32_t> GgufMetadata::get_i32_array(std::string_view key) const {
  require(key);
  return *opt_i32_array(key);
}

std::string shape_string(const int64_t* ne, int n) {
  std::string s = "[";
  for (int i = 0; i < n; ++i) s += (i ? ", " : "") + std::to_string((long long)ne[i]);
  return s + "]";
}

}  // namespace edgellm
