// GGUF reader: a bounds-checked parser over a read-only memory mapping of a model file.
//
// Reads GGUF v2 and v3 (little-endian). Every count, length and offset is checked against the
// file size before it is used, so a truncated or corrupted file is an error that names the file
// and the key or tensor, never a crash. Tensors are views into the mapping: weights are not copied.
//
//   GgufFile f = GgufFile::open("model.gguf");
//   const uint32_t n_layer = f.metadata().get_u32("llama.block_count");
//   const float eps = f.metadata().get_f32("llama.attention.layer_norm_rms_epsilon", 1e-5f);
//   const GgufTensor& wq = f.tensor("blk.0.attn_q.weight");  // wq.data, wq.type, wq.ne[0..3]
//
// Views (tensor data, metadata strings) stay valid as long as the GgufFile they came from.
#pragma once
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "quant/blocks.h"

namespace edgellm {

// A model file that cannot be used. code is E_MODEL_CORRUPT, E_MODEL_UNSUPPORTED or
// E_MODEL_NOT_FOUND; message names the file and says what is wrong (and what to do, if anything).
struct ModelError : std::runtime_error {
  std::string code;
  std::string message;
  ModelError(std::string code_, std::string message_)
      : std::runtime_error(message_), code(std::move(code_)), message(std::move(message_)) {}
};

// GGUF metadata value types, numbered as in the file format.
enum class GgufValueType : uint32_t {
  U8 = 0, I8 = 1, U16 = 2, I16 = 3, U32 = 4, I32 = 5, F32 = 6, BOOL = 7,
  STRING = 8, ARRAY = 9, U64 = 10, I64 = 11, F64 = 12,
};
// "uint8", "int32", "float32", "bool", "string", "array", ...: the names the GGUF spec uses.
const char* gguf_value_type_name(GgufValueType t);
// Bytes of one element of a scalar type (0 for STRING and ARRAY).
size_t gguf_value_type_size(GgufValueType t);
// The ggml name of any tensor type number ("Q4_K", "IQ2_XS", ...), or "type N" if unknown.
std::string ggml_type_name(uint32_t raw);
// ggml's block geometry of any type a GGUF file may hold (elements and bytes per block), including
// types edgellm does not run (IQ2_XXS, TQ1_0, MXFP4...); false for numbers ggml does not define or
// has removed from GGUF.
bool ggml_type_geometry(uint32_t raw, int64_t* block_elems, size_t* block_bytes);
// What to tell a user whose file holds a ggml type edgellm does not run: the types it runs and the
// `edgellm quantize --type` mix to make from the F16/F32 original instead.
std::string unrunnable_type_advice(uint32_t raw);

// What the parser does with a tensor whose type edgellm does not run (a ggml type outside
// kWeightTypes): Refuse (loading a model: E_MODEL_UNSUPPORTED naming the tensor, the type and a
// fix), or Keep it with GgufTensor::runnable = false and its size from ggml's geometry (describing
// a file: `edgellm inspect`).
enum class UnknownTensorTypes { Refuse, Keep };

// One metadata value. Scalars are decoded; strings and numeric array elements are views into
// the mapping (numeric elements are little-endian and possibly unaligned: use the *_at accessors).
struct GgufValue {
  GgufValueType type = GgufValueType::U8;
  uint64_t u = 0;         // U8/U16/U32/U64 and BOOL (0 or 1)
  int64_t i = 0;          // I8/I16/I32/I64
  double f = 0;           // F32/F64
  std::string_view str;   // STRING

  // ARRAY only.
  GgufValueType elem_type = GgufValueType::U8;
  uint64_t count = 0;
  const uint8_t* raw = nullptr;             // numeric and bool elements: count * element size bytes
  std::vector<std::string_view> strings;    // STRING elements
  std::vector<GgufValue> items;             // ARRAY elements (nested arrays)

  bool is_integer() const;   // a scalar of one of the eight integer types
  bool is_number() const;    // an integer or a float scalar
  // Element i of a numeric or bool array, converted (i < count; elem_type must be numeric/bool).
  double number_at(uint64_t i) const;
  int64_t int_at(uint64_t i) const;     // signed/bool elements, and unsigned ones up to INT64_MAX
  uint64_t uint_at(uint64_t i) const;   // unsigned/bool elements, and signed ones >= 0
  // "uint32", "string", "array[float32]", "array[array[int8]]"...
  std::string type_string() const;
};

// The key-value metadata, in file order, with typed lookups. A getter whose key holds a value of
// another type throws E_MODEL_CORRUPT naming the key; integer getters accept any integer type whose
// value fits, float getters accept any number. get_X(key) throws E_MODEL_CORRUPT if the key is
// missing; get_X(key, fallback) and opt_X(key) do not.
class GgufMetadata {
 public:
  struct Entry {
    std::string_view key;
    GgufValue value;
  };

  const std::vector<Entry>& entries() const { return entries_; }
  size_t size() const { return entries_.size(); }
  const GgufValue* find(std::string_view key) const;
  bool has(std::string_view key) const { return find(key) != nullptr; }

  uint32_t get_u32(std::string_view key) const;
  uint32_t get_u32(std::string_view key, uint32_t fallback) const;
  std::optional<uint32_t> opt_u32(std::string_view key) const;
  int32_t get_i32(std::string_view key) const;
  int32_t get_i32(std::string_view key, int32_t fallback) const;
  std::optional<int32_t> opt_i32(std::string_view key) const;
  uint64_t get_u64(std::string_view key) const;
  uint64_t get_u64(std::string_view key, uint64_t fallback) const;
  std::optional<uint64_t> opt_u64(std::string_view key) const;
  int64_t get_i64(std::string_view key) const;
  int64_t get_i64(std::string_view key, int64_t fallback) const;
  std::optional<int64_t> opt_i64(std::string_view key) const;
  float get_f32(std::string_view key) const;
  float get_f32(std::string_view key, float fallback) const;
  std::optional<float> opt_f32(std::string_view key) const;
  double get_f64(std::string_view key) const;
  std::optional<double> opt_f64(std::string_view key) const;
  bool get_bool(std::string_view key) const;
  bool get_bool(std::string_view key, bool fallback) const;
  std::optional<bool> opt_bool(std::string_view key) const;
  std::string get_string(std::string_view key) const;
  std::string get_string(std::string_view key, std::string fallback) const;
  std::optional<std::string> opt_string(std::string_view key) const;
  // Arrays (copied out: a vocabulary is small next to the weights).
  std::vector<std::string> get_str_array(std::string_view key) const;
  std::optional<std::vector<std::string>> opt_str_array(std::string_view key) const;
  std::vector<float> get_f32_array(std::string_view key) const;        // any numeric elements
  std::optional<std::vector<float>> opt_f32_array(std::string_view key) const;
  std::vector<int32_t> get_i32_array(std::string_view key) const;      // integer elements that fit
  std::optional<std::vector<int32_t>> opt_i32_array(std::string_view key) const;

 private:
  friend class GgufParser;
  [[noreturn]] void mismatch(std::string_view key, const GgufValue& v, const char* expected) const;
  [[noreturn]] void missing(std::string_view key) const;
  const GgufValue& require(std::string_view key) const;

  std::string file_;  // for error messages
  std::vector<Entry> entries_;
  std::unordered_map<std::string_view, size_t> index_;
};

// A tensor: a view of its bytes in the mapping. ne[0] is the contiguous (row) dimension; unused
// dimensions are 1. Quantized rows hold whole blocks (checked when the file is opened).
struct GgufTensor {
  std::string name;
  DType type = DType::F32;  // the file's ggml type number (any ggml type when !runnable)
  bool runnable = true;     // false: a type edgellm does not run (UnknownTensorTypes::Keep only)
  int n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};
  uint64_t offset = 0;         // of the data, in bytes from the start of the file
  uint64_t bytes = 0;          // of the data
  const void* data = nullptr;  // offset bytes into the mapping

  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  int64_t n_rows() const { return ne[1] * ne[2] * ne[3]; }
  size_t row_bytes() const { return dtype_row_bytes(type, ne[0]); }
  const uint8_t* row(int64_t r) const { return static_cast<const uint8_t*>(data) + (size_t)r * row_bytes(); }
};

// "[d0, d1, ...]": the first n dimensions of a ggml shape, as error messages show it.
std::string shape_string(const int64_t* ne, int n);

class GgufFile {
 public:
  // Maps and parses the file. Throws ModelError: E_MODEL_NOT_FOUND if it cannot be opened,
  // E_MODEL_CORRUPT / E_MODEL_UNSUPPORTED if it is not a GGUF v2/v3 file edgellm can use.
  static GgufFile open(const std::string& path, UnknownTensorTypes unknown = UnknownTensorTypes::Refuse);
  // Parses a file image held in memory (tests, fuzzing); `name` is used in error messages.
  static GgufFile from_bytes(std::vector<uint8_t> bytes, std::string name,
                             UnknownTensorTypes unknown = UnknownTensorTypes::Refuse);

  GgufFile(GgufFile&& other) noexcept;
  GgufFile& operator=(GgufFile&& other) noexcept;
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;
  ~GgufFile();

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t file_size() const { return size_; }
  uint32_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }  // start of the tensor data section

  const GgufMetadata& metadata() const { return meta_; }
  const std::vector<GgufTensor>& tensors() const { return tensors_; }  // in file order
  const GgufTensor* find_tensor(std::string_view name) const;
  // Throws E_MODEL_CORRUPT naming the tensor if it is missing.
  const GgufTensor& tensor(std::string_view name) const;

  // Asks the kernel to read the tensor data ahead (MADV_WILLNEED) when it fits in this process's
  // memory budget (sys/memory_budget.h); a hint, never an error. Returns whether it was asked: a
  // file larger than the budget would evict its own first pages while the last are read, so it is
  // left to be read on demand.
  bool prefetch() const;
  // Page-cache hints over [p, p + bytes) of the mapping, widened to whole pages; no-ops when the
  // data is not a mapping. Hints, never errors. `random`: no read-around on a fault there (the
  // neighbouring bytes are other experts, not the next ones read); `will_need`: start reading
  // the range now, in large requests, so the faults that follow find it in the page cache.
  void advise_random(const void* p, size_t bytes) const;
  void advise_will_need(const void* p, size_t bytes) const;
  // Whether the tensor data is a private file mapping (open) rather than bytes held in memory.
  bool mapped() const { return mapped_; }

 private:
  friend class GgufParser;
  GgufFile() = default;
  void release() noexcept;

  std::string path_;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  bool mapped_ = false;             // base_ is an mmap (else it points into owned_)
  std::vector<uint8_t> owned_;
  uint32_t version_ = 0;
  uint32_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  GgufMetadata meta_;
  std::vector<GgufTensor> tensors_;
  std::unordered_map<std::string_view, size_t> tensor_index_;
};

}  // namespace edgellm
