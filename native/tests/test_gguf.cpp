// The GGUF reader: every value type, tensor views, alignment, the refusals with their codes and
// messages, a fuzz over truncations and mutations, and the real model files in ../shared/models.
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <set>

#include "gguf/gguf.h"
#include "quant/fp16.h"
#include "quant/quant.h"
#include "quant_blocks.h"
#include "test.h"

using namespace edgellm;

namespace {

// ---- A test-only GGUF writer -------------------------------------------------------------------

struct Bytes {
  std::vector<uint8_t> b;
  template <typename T>
  void put(T v) {
    const size_t n = b.size();
    b.resize(n + sizeof(T));
    std::memcpy(b.data() + n, &v, sizeof(T));
  }
  void str(std::string_view s) {
    put<uint64_t>(s.size());
    b.insert(b.end(), s.begin(), s.end());
  }
  void raw(const void* p, size_t n) {
    const uint8_t* c = static_cast<const uint8_t*>(p);
    b.insert(b.end(), c, c + n);
  }
};

struct TensorSpec {
  std::string name;
  uint32_t type;
  std::vector<uint64_t> dims;
  std::vector<uint8_t> data;
  std::optional<uint64_t> offset;  // relative to the data section; default: next aligned slot
};

class TestGguf {
 public:
  uint32_t version = 3;
  uint32_t alignment = 32;  // used for layout; write general.alignment yourself to change the file's
  std::optional<uint64_t> n_kv_override, n_tensors_override;

  // A key with an already-encoded value (type + payload).
  void kv_raw(std::string_view key, uint32_t type, const Bytes& payload) {
    kv_.str(key);
    kv_.put<uint32_t>(type);
    kv_.raw(payload.b.data(), payload.b.size());
    ++n_kv_;
  }
  template <typename T>
  void kv(std::string_view key, GgufValueType type, T v) {
    Bytes p;
    p.put<T>(v);
    kv_raw(key, (uint32_t)type, p);
  }
  void kv_str(std::string_view key, std::string_view v) {
    Bytes p;
    p.str(v);
    kv_raw(key, (uint32_t)GgufValueType::STRING, p);
  }
  template <typename T>
  void kv_arr(std::string_view key, GgufValueType elem, const std::vector<T>& v) {
    Bytes p;
    p.put<uint32_t>((uint32_t)elem);
    p.put<uint64_t>(v.size());
    for (const T& x : v) p.put<T>(x);
    kv_raw(key, (uint32_t)GgufValueType::ARRAY, p);
  }
  void kv_str_arr(std::string_view key, const std::vector<std::string>& v) {
    Bytes p;
    p.put<uint32_t>((uint32_t)GgufValueType::STRING);
    p.put<uint64_t>(v.size());
    for (const std::string& s : v) p.str(s);
    kv_raw(key, (uint32_t)GgufValueType::ARRAY, p);
  }
  void tensor(TensorSpec t) { tensors_.push_back(std::move(t)); }
  const std::vector<uint8_t>& tensor_data(const std::string& name) const {
    for (const TensorSpec& t : tensors_)
      if (t.name == name) return t.data;
    throw std::invalid_argument("no test tensor " + name);
  }

  std::vector<uint8_t> build() const {
    Bytes out;
    out.raw("GGUF", 4);
    out.put<uint32_t>(version);
    out.put<uint64_t>(n_tensors_override.value_or(tensors_.size()));
    out.put<uint64_t>(n_kv_override.value_or(n_kv_));
    out.raw(kv_.b.data(), kv_.b.size());
    std::vector<uint64_t> offsets;
    uint64_t next = 0;
    for (const TensorSpec& t : tensors_) {
      // An overridden offset is written as given, and its data only if it lands inside the layout.
      const uint64_t off = t.offset.value_or(next);
      offsets.push_back(off);
      if (!t.offset) next = align_up(off + t.data.size());
      out.str(t.name);
      out.put<uint32_t>((uint32_t)t.dims.size());
      for (uint64_t d : t.dims) out.put<uint64_t>(d);
      out.put<uint32_t>(t.type);
      out.put<uint64_t>(off);
    }
    out.b.resize(align_up(out.b.size()), 0);
    const size_t data = out.b.size();
    out.b.resize(data + next, 0);
    for (size_t i = 0; i < tensors_.size(); ++i) {
      const TensorSpec& t = tensors_[i];
      if (!t.data.empty() && offsets[i] <= next && t.data.size() <= next - offsets[i]) std::memcpy(out.b.data() + data + offsets[i], t.data.data(), t.data.size());
    }
    return out.b;
  }

 private:
  uint64_t align_up(uint64_t x) const { return (x + alignment - 1) / alignment * alignment; }
  Bytes kv_;
  uint64_t n_kv_ = 0;
  std::vector<TensorSpec> tensors_;
};

std::vector<uint8_t> f32_bytes(const std::vector<float>& v) {
  std::vector<uint8_t> b(v.size() * 4);
  std::memcpy(b.data(), v.data(), b.size());
  return b;
}

// A small valid model: a few keys of several types and one tensor of each supported type.
TestGguf small_model() {
  TestGguf g;
  g.kv_str("general.architecture", "llama");
  g.kv<uint32_t>("llama.block_count", GgufValueType::U32, 2);
  g.kv<float>("llama.attention.layer_norm_rms_epsilon", GgufValueType::F32, 1e-5f);
  g.kv_str_arr("tokenizer.ggml.tokens", {"<unk>", "<s>", "</s>", "a", "b"});
  g.kv_arr<float>("tokenizer.ggml.scores", GgufValueType::F32, {0, 0, 0, -1, -2});
  g.kv_arr<int32_t>("tokenizer.ggml.token_type", GgufValueType::I32, {2, 3, 3, 1, 1});
  std::vector<float> w(64 * 2);
  test::fill_uniform(w.data(), (int64_t)w.size(), -1, 1);
  std::vector<uint8_t> q4(2 * sizeof(block_q4_0) * 2), q8(2 * sizeof(block_q8_0) * 2), h(64 * 2 * 2);
  quantize_row(DType::Q4_0, w.data(), q4.data(), 128);
  quantize_row(DType::Q8_0, w.data(), q8.data(), 128);
  convert_row_f32_to_f16(w.data(), reinterpret_cast<uint16_t*>(h.data()), 128);
  g.tensor({"token_embd.weight", 0, {64, 2}, f32_bytes(w), {}});
  g.tensor({"blk.0.attn_q.weight", 2, {64, 2}, q4, {}});
  g.tensor({"blk.0.attn_k.weight", 8, {64, 2}, q8, {}});
  g.tensor({"blk.0.attn_v.weight", 1, {64, 2}, h, {}});
  g.tensor({"blk.0.ffn_up.weight", 30, {32, 1, 2, 2}, h, {}});
  g.tensor({"output_norm.weight", 0, {64}, std::vector<uint8_t>(256, 0), {}});
  return g;
}

// One 512 x 3 tensor "w.<TYPE>" of every weight type, random valid blocks (quant_blocks.h).
TestGguf every_weight_type_model() {
  TestGguf g;
  g.kv_str("general.architecture", "llama");
  for (DType t : kWeightTypes) {
    std::vector<uint8_t> data(dtype_row_bytes(t, 512) * 3);
    for (int r = 0; r < 3; ++r) test::random_row(t, data.data() + r * dtype_row_bytes(t, 512), 512);
    g.tensor({std::string("w.") + dtype_name(t), (uint32_t)t, {512, 3}, data, {}});
  }
  return g;
}

// Runs fn, which must throw a ModelError with `code` whose message contains every `parts`.
template <typename Fn>
void expect_error(Fn fn, const std::string& code, std::vector<std::string> parts, const char* file, int line) {
  try {
    fn();
    test::fail(file, line, "expected " + code + ", but the file was accepted");
  } catch (const ModelError& e) {
    if (e.code != code) test::fail(file, line, "expected " + code + ", got " + e.code + ": " + e.message);
    for (const std::string& p : parts) {
      if (e.message.find(p) == std::string::npos)
        test::fail(file, line, "message lacks '" + p + "': " + e.message);
    }
    if (std::string(e.what()) != e.message) test::fail(file, line, "what() differs from message");
  } catch (const std::exception& e) {
    test::fail(file, line, std::string("expected ModelError, got another exception: ") + e.what());
  }
}
#define EXPECT_ERROR(expr, code, ...) expect_error([&] { (void)(expr); }, code, {__VA_ARGS__}, __FILE__, __LINE__)

GgufFile parse(const std::vector<uint8_t>& b, const char* name = "test.gguf") {
  return GgufFile::from_bytes(b, name);
}

std::string temp_path(const char* stem) {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir && *dir ? dir : "/tmp") + "/edgellm-gguf-" + std::to_string(getpid()) + "-" + stem;
}

void write_file(const std::string& path, const std::vector<uint8_t>& b) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(b.data()), (std::streamsize)b.size());
}

// Touches every byte a successful parse exposes, so the sanitizers see any view out of bounds.
uint64_t touch_everything(const GgufFile& f) {
  uint64_t sum = 0;
  for (const auto& e : f.metadata().entries()) {
    sum += e.key.size() + e.value.type_string().size();
    const GgufValue& v = e.value;
    sum += v.str.empty() ? 0 : (uint8_t)v.str.back();
    for (std::string_view s : v.strings) sum += s.empty() ? 0 : (uint8_t)s.back();
    if (v.raw) {
      double fsum = 0;
      for (uint64_t k = 0; k < v.count; ++k) {
        fsum += v.number_at(k);
        sum += v.uint_at(k) + (uint64_t)v.int_at(k);
      }
      sum += std::isfinite(fsum) ? 1 : 0;
    }
  }
  for (const GgufTensor& t : f.tensors()) {
    const uint8_t* p = static_cast<const uint8_t*>(t.data);
    sum += p[0] + p[t.bytes - 1] + (uint64_t)t.n_elements();
    CHECK(t.bytes == (uint64_t)t.row_bytes() * (uint64_t)t.n_rows());
    CHECK(t.offset + t.bytes <= f.file_size());
    CHECK(t.offset % f.alignment() == 0);
    // Every row dequantizes to a defined result whatever its bytes (NaN / Inf scales included).
    std::vector<float> row((size_t)t.ne[0]);
    for (int64_t r = 0; r < t.n_rows(); ++r) {
      dequantize_row(t.type, t.row(r), row.data(), t.ne[0]);
      sum += std::isfinite(row[0]) ? 1 : 0;
    }
  }
  return sum;
}

// Parses b; success or a ModelError with a model code are both fine; anything else is a failure.
struct FuzzStats {
  int ok = 0, corrupt = 0, unsupported = 0;
};
void fuzz_one(const std::vector<uint8_t>& b, FuzzStats& st, const std::string& label) {
  try {
    GgufFile f = parse(b);
    touch_everything(f);
    ++st.ok;
  } catch (const ModelError& e) {
    if (e.code == "E_MODEL_CORRUPT") ++st.corrupt;
    else if (e.code == "E_MODEL_UNSUPPORTED") ++st.unsupported;
    else test::fail(__FILE__, __LINE__, label + ": unexpected code " + e.code + ": " + e.message);
    if (e.message.rfind("test.gguf: ", 0) != 0) test::fail(__FILE__, __LINE__, label + ": message does not name the file: " + e.message);
  } catch (const std::exception& e) {
    test::fail(__FILE__, __LINE__, label + ": non-ModelError exception: " + e.what());
  }
}

// ---- Real models ---------------------------------------------------------------------------------

// The models directory, or "" after printing the skip line (a failure when CI=true).
std::string models_dir() { return test::shared_models_dir("GGUF"); }

}  // namespace

// ---- Value types ---------------------------------------------------------------------------------

TEST(gguf, parses_every_scalar_value_type) {
  TestGguf g;
  g.kv<uint8_t>("u8", GgufValueType::U8, 200);
  g.kv<int8_t>("i8", GgufValueType::I8, -100);
  g.kv<uint16_t>("u16", GgufValueType::U16, 60000);
  g.kv<int16_t>("i16", GgufValueType::I16, -30000);
  g.kv<uint32_t>("u32", GgufValueType::U32, 4000000000u);
  g.kv<int32_t>("i32", GgufValueType::I32, -2000000000);
  g.kv<float>("f32", GgufValueType::F32, 0.1f);
  g.kv<uint8_t>("bool", GgufValueType::BOOL, 1);
  g.kv_str("string", "héllo\n");
  g.kv<uint64_t>("u64", GgufValueType::U64, 18446744073709551615ull);
  g.kv<int64_t>("i64", GgufValueType::I64, -9223372036854775807ll - 1);
  g.kv<double>("f64", GgufValueType::F64, 0.1);
  g.kv_str("empty", "");
  GgufFile f = parse(g.build());
  const GgufMetadata& m = f.metadata();
  CHECK_EQ(f.version(), 3u);
  CHECK_EQ(m.size(), (size_t)13);
  CHECK_EQ(m.get_u32("u8"), 200u);
  CHECK_EQ(m.get_i32("i8"), -100);
  CHECK_EQ(m.get_u32("u16"), 60000u);
  CHECK_EQ(m.get_i32("i16"), -30000);
  CHECK_EQ(m.get_u32("u32"), 4000000000u);
  CHECK_EQ(m.get_i64("u32"), 4000000000ll);
  CHECK_EQ(m.get_i32("i32"), -2000000000);
  CHECK(m.get_f32("f32") == 0.1f);
  CHECK(m.get_bool("bool"));
  CHECK(m.get_string("string") == "héllo\n");
  CHECK(m.get_string("empty").empty());
  CHECK_EQ(m.get_u64("u64"), 18446744073709551615ull);
  CHECK_EQ(m.get_i64("i64"), -9223372036854775807ll - 1);
  CHECK(m.get_f64("f64") == 0.1);
  CHECK(m.get_f32("u8") == 200.0f);  // float getters take any number
  // Entries keep file order and report their types by the spec's names.
  const char* types[] = {"uint8", "int8", "uint16", "int16", "uint32", "int32", "float32",
                         "bool", "string", "uint64", "int64", "float64", "string"};
  for (size_t i = 0; i < m.entries().size(); ++i) CHECK(m.entries()[i].value.type_string() == types[i]);
}

TEST(gguf, parses_arrays_of_every_type_and_nested_arrays) {
  TestGguf g;
  g.kv_arr<uint8_t>("a.u8", GgufValueType::U8, {1, 255});
  g.kv_arr<int8_t>("a.i8", GgufValueType::I8, {-1, 127});
  g.kv_arr<uint16_t>("a.u16", GgufValueType::U16, {1, 65535});
  g.kv_arr<int16_t>("a.i16", GgufValueType::I16, {-32768, 5});
  g.kv_arr<uint32_t>("a.u32", GgufValueType::U32, {7, 4294967295u});
  g.kv_arr<int32_t>("a.i32", GgufValueType::I32, {-7, 2147483647});
  g.kv_arr<float>("a.f32", GgufValueType::F32, {0.5f, -1.25f, 3e38f});
  g.kv_arr<uint8_t>("a.bool", GgufValueType::BOOL, {1, 0, 1});
  g.kv_arr<uint64_t>("a.u64", GgufValueType::U64, {1ull << 60});
  g.kv_arr<int64_t>("a.i64", GgufValueType::I64, {-(1ll << 60)});
  g.kv_arr<double>("a.f64", GgufValueType::F64, {1e300});
  g.kv_arr<float>("a.empty", GgufValueType::F32, {});
  g.kv_str_arr("a.str", {"x", "", "yz"});
  Bytes nested;  // [[1, 2], [3]] as arrays of int32, then [["s"]] as an array of string arrays
  nested.put<uint32_t>((uint32_t)GgufValueType::ARRAY);
  nested.put<uint64_t>(2);
  nested.put<uint32_t>((uint32_t)GgufValueType::I32); nested.put<uint64_t>(2); nested.put<int32_t>(1); nested.put<int32_t>(2);
  nested.put<uint32_t>((uint32_t)GgufValueType::I32); nested.put<uint64_t>(1); nested.put<int32_t>(3);
  g.kv_raw("a.nested", (uint32_t)GgufValueType::ARRAY, nested);
  Bytes nested_s;
  nested_s.put<uint32_t>((uint32_t)GgufValueType::ARRAY);
  nested_s.put<uint64_t>(1);
  nested_s.put<uint32_t>((uint32_t)GgufValueType::STRING); nested_s.put<uint64_t>(1); nested_s.str("s");
  g.kv_raw("a.nested_str", (uint32_t)GgufValueType::ARRAY, nested_s);
  GgufFile f = parse(g.build());
  const GgufMetadata& m = f.metadata();

  CHECK(m.get_i32_array("a.u8") == (std::vector<int32_t>{1, 255}));
  CHECK(m.get_i32_array("a.i8") == (std::vector<int32_t>{-1, 127}));
  CHECK(m.get_i32_array("a.u16") == (std::vector<int32_t>{1, 65535}));
  CHECK(m.get_i32_array("a.i16") == (std::vector<int32_t>{-32768, 5}));
  CHECK(m.get_i32_array("a.i32") == (std::vector<int32_t>{-7, 2147483647}));
  CHECK(m.get_f32_array("a.f32") == (std::vector<float>{0.5f, -1.25f, 3e38f}));
  CHECK(m.get_f32_array("a.u8") == (std::vector<float>{1, 255}));
  CHECK(m.get_f32_array("a.empty").empty());
  CHECK(m.get_str_array("a.str") == (std::vector<std::string>{"x", "", "yz"}));
  const GgufValue* b = m.find("a.bool");
  CHECK(b && b->count == 3 && b->uint_at(0) == 1 && b->uint_at(1) == 0);
  const GgufValue* u32 = m.find("a.u32");
  CHECK(u32 && u32->uint_at(1) == 4294967295u);
  const GgufValue* u64 = m.find("a.u64");
  CHECK(u64 && u64->uint_at(0) == (1ull << 60));
  const GgufValue* i64 = m.find("a.i64");
  CHECK(i64 && i64->int_at(0) == -(1ll << 60));
  CHECK(m.find("a.f64") && m.find("a.f64")->number_at(0) == 1e300);
  const GgufValue* n = m.find("a.nested");
  CHECK(n && n->count == 2 && n->items.size() == 2);
  if (n && n->items.size() == 2) {
    CHECK(n->items[0].count == 2 && n->items[0].int_at(1) == 2);
    CHECK(n->items[1].count == 1 && n->items[1].int_at(0) == 3);
    CHECK(n->type_string() == "array[array[int32]]");
  }
  const GgufValue* ns = m.find("a.nested_str");
  CHECK(ns && ns->items.size() == 1 && ns->items[0].strings.size() == 1 && ns->items[0].strings[0] == "s");
  CHECK(m.find("a.str")->type_string() == "array[string]");
  CHECK(m.find("a.f32")->type_string() == "array[float32]");
  // A uint32 array element beyond int32 is out of range for get_i32_array.
  EXPECT_ERROR(m.get_i32_array("a.u32"), "E_MODEL_CORRUPT", "'a.u32'", "element 1", "out of range");
}

TEST(gguf, typed_getters_check_types_ranges_and_presence) {
  TestGguf g;
  g.kv_str("name", "llama");
  g.kv<int32_t>("negative", GgufValueType::I32, -1);
  g.kv<uint64_t>("big", GgufValueType::U64, 1ull << 40);
  g.kv<uint8_t>("flag", GgufValueType::BOOL, 0);
  g.kv_arr<float>("scores", GgufValueType::F32, {1, 2});
  GgufFile f = parse(g.build());
  const GgufMetadata& m = f.metadata();
  EXPECT_ERROR(m.get_u32("name"), "E_MODEL_CORRUPT", "test.gguf: ", "'name'", "string", "integer");
  EXPECT_ERROR(m.get_f32("name"), "E_MODEL_CORRUPT", "'name'", "string");
  EXPECT_ERROR(m.get_string("big"), "E_MODEL_CORRUPT", "'big'", "uint64", "expected string");
  EXPECT_ERROR(m.get_bool("big"), "E_MODEL_CORRUPT", "'big'");
  EXPECT_ERROR(m.get_str_array("scores"), "E_MODEL_CORRUPT", "'scores'", "array[float32]", "array[string]");
  EXPECT_ERROR(m.get_i32_array("scores"), "E_MODEL_CORRUPT", "'scores'");
  EXPECT_ERROR(m.get_u32("negative"), "E_MODEL_CORRUPT", "'negative'", "-1", "out of range");
  EXPECT_ERROR(m.get_u32("big"), "E_MODEL_CORRUPT", "'big'", "1099511627776", "uint32");
  EXPECT_ERROR(m.get_u32("missing"), "E_MODEL_CORRUPT", "'missing'", "missing");
  CHECK_EQ(m.get_i64("negative"), -1ll);
  CHECK_EQ(m.get_u64("big"), 1ull << 40);
  CHECK(!m.get_bool("flag"));
  CHECK(!m.opt_u32("missing").has_value());
  CHECK(!m.opt_string("missing").has_value());
  CHECK(!m.opt_str_array("missing").has_value());
  CHECK_EQ(m.get_u32("missing", 7u), 7u);
  CHECK(m.get_f32("missing", 10000.0f) == 10000.0f);
  CHECK(m.get_string("missing", "default") == "default");
  CHECK(m.get_bool("missing", true));
  EXPECT_ERROR(m.opt_u32("name"), "E_MODEL_CORRUPT", "'name'");  // present but mistyped is an error
  EXPECT_ERROR(m.get_u32("name", 3u), "E_MODEL_CORRUPT", "'name'");
}

// ---- Tensors and alignment ---------------------------------------------------------------------

TEST(gguf, tensors_are_views_into_the_file_at_aligned_offsets) {
  TestGguf g = small_model();
  const std::vector<uint8_t> bytes = g.build();
  GgufFile f = parse(bytes);
  CHECK_EQ(f.tensors().size(), (size_t)6);
  CHECK_EQ(f.alignment(), 32u);
  CHECK_EQ(f.data_offset() % 32, 0ull);
  const char* names[] = {"token_embd.weight", "blk.0.attn_q.weight", "blk.0.attn_k.weight",
                         "blk.0.attn_v.weight", "blk.0.ffn_up.weight", "output_norm.weight"};
  for (size_t i = 0; i < 6; ++i) CHECK(f.tensors()[i].name == names[i]);
  const GgufTensor& q = f.tensor("blk.0.attn_q.weight");
  CHECK(q.type == DType::Q4_0);
  CHECK_EQ(q.n_dims, 2);
  CHECK_EQ(q.ne[0], 64ll);
  CHECK_EQ(q.ne[1], 2ll);
  CHECK_EQ(q.ne[2], 1ll);
  CHECK_EQ(q.n_rows(), 2ll);
  CHECK_EQ(q.row_bytes(), (size_t)36);
  CHECK_EQ(q.bytes, 72ull);
  CHECK_EQ(q.offset % 32, 0ull);
  // The view is the file's bytes, not a copy: compare with the image we parsed.
  CHECK(std::memcmp(q.data, bytes.data() + q.offset, q.bytes) == 0);
  CHECK(q.row(1) == static_cast<const uint8_t*>(q.data) + 36);
  const GgufTensor& up = f.tensor("blk.0.ffn_up.weight");
  CHECK(up.type == DType::BF16 && up.n_dims == 4 && up.ne[3] == 2 && up.n_elements() == 128);
  // Dequantized contents match what was written.
  const GgufTensor& e = f.tensor("token_embd.weight");
  std::vector<float> w(128), got(128);
  std::memcpy(w.data(), e.data, 512);
  dequantize_row(DType::Q4_0, q.data, got.data(), 128);
  CHECK_NEAR_ALL(got.data(), w.data(), 128, 0.0, 0.13);
  CHECK(f.find_tensor("nope") == nullptr);
  EXPECT_ERROR(f.tensor("nope"), "E_MODEL_CORRUPT", "'nope'");
}

TEST(gguf, general_alignment_is_respected_and_validated) {
  TestGguf g = small_model();
  g.alignment = 64;
  g.kv<uint32_t>("general.alignment", GgufValueType::U32, 64);
  GgufFile f = parse(g.build());
  CHECK_EQ(f.alignment(), 64u);
  CHECK_EQ(f.data_offset() % 64, 0ull);
  for (const GgufTensor& t : f.tensors()) CHECK_EQ(t.offset % 64, 0ull);

  // A file laid out at 32 but declaring 64 has misaligned data offsets.
  TestGguf mis = small_model();
  mis.kv<uint32_t>("general.alignment", GgufValueType::U32, 64);
  EXPECT_ERROR(parse(mis.build()), "E_MODEL_CORRUPT", "not a multiple of the alignment 64");
  for (uint32_t bad : {0u, 3u, 48u}) {
    TestGguf b = small_model();
    b.kv<uint32_t>("general.alignment", GgufValueType::U32, bad);
    EXPECT_ERROR(parse(b.build()), "E_MODEL_CORRUPT", "'general.alignment'", "power of two");
  }
  TestGguf s = small_model();
  s.kv_str("general.alignment", "32");
  EXPECT_ERROR(parse(s.build()), "E_MODEL_CORRUPT", "'general.alignment'", "string");
}

TEST(gguf, version_2_files_parse_like_version_3) {
  TestGguf g = small_model();
  g.version = 2;
  GgufFile f = parse(g.build());
  CHECK_EQ(f.version(), 2u);
  CHECK_EQ(f.tensors().size(), (size_t)6);
}

TEST(gguf, open_maps_a_real_file_and_reports_missing_ones) {
  const std::string path = temp_path("open.gguf");
  const std::vector<uint8_t> bytes = small_model().build();
  write_file(path, bytes);
  {
    GgufFile f = GgufFile::open(path);
    CHECK_EQ(f.file_size(), (uint64_t)bytes.size());
    CHECK(f.path() == path);
    CHECK(f.prefetch());  // a few kilobytes: within any memory budget
    const GgufTensor& t = f.tensor("blk.0.attn_k.weight");
    CHECK(std::memcmp(t.data, bytes.data() + t.offset, t.bytes) == 0);
    GgufFile moved = std::move(f);  // views survive a move
    CHECK(moved.tensor("blk.0.attn_k.weight").data == t.data);
    CHECK(moved.metadata().get_string("general.architecture") == "llama");
  }
  unlink(path.c_str());
  EXPECT_ERROR(GgufFile::open(path), "E_MODEL_NOT_FOUND", path, "cannot open");
  EXPECT_ERROR(GgufFile::open("/"), "E_MODEL_NOT_FOUND", "not a regular file");
  write_file(path, {});
  EXPECT_ERROR(GgufFile::open(path), "E_MODEL_CORRUPT", path, "empty");
  unlink(path.c_str());
}

// ---- Refusals ----------------------------------------------------------------------------------

TEST(gguf, refuses_other_versions_byte_orders_and_formats) {
  TestGguf v1 = small_model();
  v1.version = 1;
  EXPECT_ERROR(parse(v1.build()), "E_MODEL_UNSUPPORTED", "test.gguf: ", "GGUF v1 is obsolete", "convert");
  TestGguf v4 = small_model();
  v4.version = 4;
  EXPECT_ERROR(parse(v4.build()), "E_MODEL_UNSUPPORTED", "GGUF version 4");
  TestGguf be = small_model();
  be.version = 0x03000000;  // 3, written big-endian
  EXPECT_ERROR(parse(be.build()), "E_MODEL_UNSUPPORTED", "big-endian");
  std::vector<uint8_t> fugg = small_model().build();
  std::memcpy(fugg.data(), "FUGG", 4);
  EXPECT_ERROR(parse(fugg), "E_MODEL_UNSUPPORTED", "big-endian");
  std::vector<uint8_t> ggjt = {'t', 'j', 'g', 'g', 3, 0, 0, 0, 0, 0, 0, 0};
  EXPECT_ERROR(parse(ggjt), "E_MODEL_UNSUPPORTED", "pre-GGUF", "GGJT v3", "convert");
  std::vector<uint8_t> elf = {0x7f, 'E', 'L', 'F', 2, 1, 1, 0};
  EXPECT_ERROR(parse(elf), "E_MODEL_UNSUPPORTED", "not a GGUF", "7f 45 4c 46");
  EXPECT_ERROR(parse({}), "E_MODEL_CORRUPT", "empty");
  EXPECT_ERROR(parse({'G', 'G'}), "E_MODEL_CORRUPT", "too short");
}

TEST(gguf, refuses_unknown_tensor_types_naming_them) {
  // IQ2_XXS (16): a ggml type edgellm does not run (256-weight blocks of 66 bytes); the advice
  // names the nearest mix edgellm quantize writes.
  TestGguf g;
  g.tensor({"blk.0.ffn_down.weight", 16, {256, 2}, std::vector<uint8_t>(132, 0), {}});
  EXPECT_ERROR(parse(g.build()), "E_MODEL_UNSUPPORTED", "'blk.0.ffn_down.weight'", "has type IQ2_XXS",
               "does not support IQ2_XXS yet",
               "it runs F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, IQ4_NL and IQ4_XS",
               "`edgellm quantize MODEL-F16.gguf OUT.gguf --type q2_k`");
  // The repacked Q4_0_4_4 (31) was removed from GGUF files by ggml.
  TestGguf r;
  r.tensor({"blk.0.ffn_down.weight", 31, {256, 2}, std::vector<uint8_t>(288, 0), {}});
  EXPECT_ERROR(parse(r.build()), "E_MODEL_UNSUPPORTED", "'blk.0.ffn_down.weight'", "has type Q4_0_4_4",
               "not a tensor type of GGUF files");
  // Q8_1 and Q8_K are activation formats, never weights.
  TestGguf a;
  a.tensor({"blk.0.ffn_down.weight", 15, {256, 2}, std::vector<uint8_t>(584, 0), {}});
  EXPECT_ERROR(parse(a.build()), "E_MODEL_UNSUPPORTED", "'blk.0.ffn_down.weight'", "has type Q8_K");
  TestGguf h;
  h.tensor({"x", 1000, {32}, std::vector<uint8_t>(64, 0), {}});
  EXPECT_ERROR(parse(h.build()), "E_MODEL_UNSUPPORTED", "'x'", "type 1000", "not a tensor type of GGUF files");
}

TEST(gguf, keeps_unknown_tensor_types_for_describing_a_file) {
  // inspect opens with Keep: the IQ2_XXS tensor is there, not runnable, sized by ggml's geometry,
  // and the tensor after it is at its aligned offset.
  TestGguf g;
  g.tensor({"blk.0.ffn_down.weight", 16, {256, 2}, std::vector<uint8_t>(132, 7), {}});
  g.tensor({"blk.0.ffn_up.weight", 12, {256, 1}, std::vector<uint8_t>(144, 9), {}});
  const GgufFile f = GgufFile::from_bytes(g.build(), "mixed.gguf", UnknownTensorTypes::Keep);
  const GgufTensor& d = f.tensor("blk.0.ffn_down.weight");
  CHECK(!d.runnable);
  CHECK_EQ(d.bytes, (uint64_t)132);
  CHECK(ggml_type_name((uint32_t)d.type) == "IQ2_XXS");
  CHECK_EQ((int)static_cast<const uint8_t*>(d.data)[131], 7);
  const GgufTensor& u = f.tensor("blk.0.ffn_up.weight");
  CHECK(u.runnable);
  CHECK(u.type == DType::Q4_K);
  CHECK_EQ((int)static_cast<const uint8_t*>(u.data)[0], 9);
  // A type ggml removed from GGUF (Q4_0_4_4) has no size: refused either way.
  TestGguf h;
  h.tensor({"x", 31, {32}, std::vector<uint8_t>(18, 0), {}});
  EXPECT_ERROR(GgufFile::from_bytes(h.build(), "r.gguf", UnknownTensorTypes::Keep), "E_MODEL_UNSUPPORTED", "Q4_0_4_4");
}

TEST(gguf, refuses_rows_that_are_not_whole_blocks) {
  TestGguf g;
  g.tensor({"blk.0.ffn_down.weight", 8, {172, 64}, std::vector<uint8_t>(344 * 34, 0), {}});
  EXPECT_ERROR(parse(g.build(), "model.gguf"), "E_MODEL_CORRUPT",
               "model.gguf: tensor 'blk.0.ffn_down.weight' (Q8_0): row of 172 elements is not a multiple of "
               "the block size 32");
}

TEST(gguf, refuses_super_block_rows_that_are_not_a_multiple_of_256) {
  // Qwen2.5-0.5B's width 896: llama.cpp stores such tensors as Q5_0 / Q8_0, never as a K-quant.
  for (uint32_t type : {12u, 14u, 23u}) {
    TestGguf g;
    g.tensor({"blk.0.attn_q.weight", type, {896, 2}, std::vector<uint8_t>(4096, 0), {}});
    EXPECT_ERROR(parse(g.build(), "model.gguf"), "E_MODEL_CORRUPT", "model.gguf: tensor 'blk.0.attn_q.weight' (",
                 "): row of 896 elements is not a multiple of the block size 256");
  }
}

TEST(gguf, accepts_every_weight_type_as_views_of_whole_rows) {
  const TestGguf g = every_weight_type_model();
  const std::vector<uint8_t> bytes = g.build();
  GgufFile f = parse(bytes);
  CHECK_EQ(f.tensors().size(), sizeof kWeightTypes / sizeof kWeightTypes[0]);
  for (DType t : kWeightTypes) {
    const GgufTensor& x = f.tensor(std::string("w.") + dtype_name(t));
    CHECK(x.type == t);
    CHECK_EQ(x.row_bytes(), dtype_row_bytes(t, 512));
    CHECK_EQ(x.n_rows(), 3ll);
    CHECK(std::memcmp(x.data, g.tensor_data(std::string("w.") + dtype_name(t)).data(), x.bytes) == 0);
  }
}

TEST(gguf, refuses_targeted_corruptions) {
  const std::string C = "E_MODEL_CORRUPT";
  {  // tensor and key counts far beyond the file
    TestGguf g = small_model();
    g.n_tensors_override = 1ull << 62;
    EXPECT_ERROR(parse(g.build()), C, "claims 4611686018427387904 tensors");
    TestGguf k = small_model();
    k.n_kv_override = ~0ull;
    EXPECT_ERROR(parse(k.build()), C, "metadata keys");
    TestGguf m = small_model();
    m.n_kv_override = 7;  // one more than written: the next key runs into the tensor infos
    FuzzStats st;
    fuzz_one(m.build(), st, "n_kv + 1");  // any ModelError is fine; it must not crash
    CHECK_EQ(st.ok, 0);
  }
  {  // a huge string length
    TestGguf g;
    Bytes p;
    p.put<uint64_t>(~0ull - 3);
    g.kv_raw("general.name", (uint32_t)GgufValueType::STRING, p);
    EXPECT_ERROR(parse(g.build()), C, "'general.name'", "runs past the end");
    TestGguf k;
    k.kv_str(std::string(70000, 'k'), "v");
    EXPECT_ERROR(parse(k.build()), C, "metadata entry #0 key", "length 70000");
  }
  {  // a huge array count
    TestGguf g;
    Bytes p;
    p.put<uint32_t>((uint32_t)GgufValueType::STRING);
    p.put<uint64_t>(1ull << 61);
    g.kv_raw("tokenizer.ggml.tokens", (uint32_t)GgufValueType::ARRAY, p);
    EXPECT_ERROR(parse(g.build()), C, "'tokenizer.ggml.tokens'", "elements");
  }
  {  // unknown value types, bad bools, nesting too deep
    TestGguf g;
    g.kv<uint32_t>("k", (GgufValueType)13, 0);
    EXPECT_ERROR(parse(g.build()), C, "'k'", "unknown value type 13");
    TestGguf b;
    b.kv<uint8_t>("flag", GgufValueType::BOOL, 2);
    EXPECT_ERROR(parse(b.build()), C, "'flag'", "bool");
    TestGguf d;
    Bytes p;
    for (int i = 0; i < 6; ++i) { p.put<uint32_t>((uint32_t)GgufValueType::ARRAY); p.put<uint64_t>(1); }
    p.put<uint32_t>((uint32_t)GgufValueType::U8); p.put<uint64_t>(0);
    d.kv_raw("deep", (uint32_t)GgufValueType::ARRAY, p);
    EXPECT_ERROR(parse(d.build()), "E_MODEL_UNSUPPORTED", "'deep'", "nests arrays");
  }
  {  // duplicate keys and tensor names
    TestGguf g = small_model();
    g.kv<uint32_t>("llama.block_count", GgufValueType::U32, 2);
    EXPECT_ERROR(parse(g.build()), C, "'llama.block_count'", "duplicate key");
    TestGguf t = small_model();
    t.tensor({"token_embd.weight", 0, {8}, std::vector<uint8_t>(32, 0), {}});
    EXPECT_ERROR(parse(t.build()), C, "'token_embd.weight'", "duplicate tensor");
  }
  {  // offsets past the end, misaligned, overlapping
    TestGguf g = small_model();
    g.tensor({"late", 0, {8}, std::vector<uint8_t>(32, 0), 1ull << 40});
    EXPECT_ERROR(parse(g.build()), C, "'late'", "past the end");
    TestGguf w = small_model();
    w.tensor({"wrap", 0, {8}, std::vector<uint8_t>(32, 0), ~0ull - 31});
    EXPECT_ERROR(parse(w.build()), C, "'wrap'", "past the end");
    TestGguf m = small_model();
    m.tensor({"odd", 0, {8}, std::vector<uint8_t>(32, 0), 4});
    EXPECT_ERROR(parse(m.build()), C, "'odd'", "not a multiple of the alignment 32");
    TestGguf o = small_model();
    o.tensor({"overlap", 0, {8}, std::vector<uint8_t>(32, 0), 32});  // inside token_embd (512 bytes)
    EXPECT_ERROR(parse(o.build()), C, "overlaps", "'overlap'", "'token_embd.weight'");
    std::vector<uint8_t> cut = small_model().build();
    cut.resize(cut.size() - 1);
    EXPECT_ERROR(parse(cut), C, "'output_norm.weight'", "past the end");
  }
  {  // bad shapes
    TestGguf z;
    z.tensor({"zero", 0, {8, 0}, {}, {}});
    EXPECT_ERROR(parse(z.build()), C, "'zero'", "dimension 1 = 0");
    TestGguf five;
    five.tensor({"five", 0, {1, 1, 1, 1, 8}, std::vector<uint8_t>(32, 0), {}});
    EXPECT_ERROR(parse(five.build()), C, "'five'", "5 dimensions");
    TestGguf none;
    none.tensor({"none", 0, {}, std::vector<uint8_t>(32, 0), {}});
    EXPECT_ERROR(parse(none.build()), C, "'none'", "0 dimensions");
    TestGguf huge;
    huge.tensor({"huge", 0, {1ull << 32, 1ull << 32}, {}, {}});
    EXPECT_ERROR(parse(huge.build()), C, "'huge'", "64 bits");
    TestGguf bytes;
    bytes.tensor({"bytes", 0, {1ull << 31, 1ull << 31}, {}, {}});  // 2^62 elements, 2^64 bytes
    EXPECT_ERROR(parse(bytes.build()), C, "'bytes'", "2^64 bytes");
    TestGguf longname;
    longname.tensor({std::string(65, 'n'), 0, {8}, std::vector<uint8_t>(32, 0), {}});
    EXPECT_ERROR(parse(longname.build()), C, "tensor info #0 name", "64 bytes");
  }
}

// ---- Fuzz --------------------------------------------------------------------------------------

TEST(gguf, fuzz_every_truncation_is_refused_cleanly) {
  const std::vector<uint8_t> full = small_model().build();
  FuzzStats st;
  for (size_t n = 0; n < full.size(); ++n) {
    fuzz_one(std::vector<uint8_t>(full.begin(), full.begin() + (long)n), st, "truncated to " + std::to_string(n));
  }
  std::printf("     %zu truncations: %d accepted, %d corrupt, %d unsupported\n", full.size(), st.ok, st.corrupt,
              st.unsupported);
  CHECK_EQ(st.ok, 0);  // every byte of this file matters: the last tensor ends at the last byte
}

TEST(gguf, fuzz_random_mutations_never_crash) {
  const std::vector<uint8_t> full = small_model().build();
  std::mt19937 rng(20240229);
  FuzzStats st;
  const int kVariants = 20000;
  // Values that tend to hit edge cases when written over a count, length or offset.
  const uint8_t specials[] = {0x00, 0x01, 0x02, 0x04, 0x05, 0x08, 0x0c, 0x1e, 0x20, 0x3f, 0x40, 0x7f, 0x80, 0xfe, 0xff};
  for (int v = 0; v < kVariants; ++v) {
    std::vector<uint8_t> b = full;
    const int n_mut = 1 + (int)(rng() % 8);
    for (int k = 0; k < n_mut; ++k) {
      const size_t at = rng() % b.size();
      switch (rng() % 4) {
        case 0: b[at] = (uint8_t)rng(); break;
        case 1: b[at] ^= (uint8_t)(1u << (rng() % 8)); break;
        case 2: b[at] = specials[rng() % sizeof specials]; break;
        case 3: {  // overwrite 8 bytes (a u64 count/length/offset) with a special pattern
          const uint8_t s = specials[rng() % sizeof specials];
          for (size_t j = at; j < std::min(b.size(), at + 8); ++j) b[j] = (j == at) ? (uint8_t)rng() : s;
          break;
        }
      }
    }
    if (rng() % 8 == 0) b.resize(rng() % b.size());
    fuzz_one(b, st, "mutation " + std::to_string(v));
  }
  std::printf("     %d mutations: %d accepted, %d corrupt, %d unsupported\n", kVariants, st.ok, st.corrupt,
              st.unsupported);
  CHECK(st.corrupt > 0 && st.ok > 0);
}

// The same over tensors of every weight type, their scale bytes included: any NaN / Inf f16
// scale a mutation makes must dequantize to a defined result (touch_everything), not crash.
TEST(gguf, fuzz_mutations_of_every_weight_type_never_crash) {
  const std::vector<uint8_t> full = every_weight_type_model().build();
  std::mt19937 rng(20261206);
  FuzzStats st;
  for (size_t n = 0; n < full.size(); n += 61)
    fuzz_one(std::vector<uint8_t>(full.begin(), full.begin() + (long)n), st, "truncated to " + std::to_string(n));
  const int kVariants = 3000;
  for (int v = 0; v < kVariants; ++v) {
    std::vector<uint8_t> b = full;
    const int n_mut = 1 + (int)(rng() % 16);
    for (int k = 0; k < n_mut; ++k) {
      const size_t at = rng() % b.size();
      // Half the mutations write 0x7C / 0xFC / 0x7E (f16 Inf / -Inf / NaN high bytes) anywhere.
      const uint8_t specials[] = {0x7C, 0xFC, 0x7E, 0xFF};
      b[at] = rng() % 2 ? specials[rng() % 4] : (uint8_t)rng();
    }
    fuzz_one(b, st, "mutation " + std::to_string(v));
  }
  std::printf("     every-type mutations: %d accepted, %d corrupt, %d unsupported\n", st.ok, st.corrupt, st.unsupported);
  CHECK(st.ok > 0);
}

TEST(gguf, fuzz_through_the_file_mapping) {
  // The same truncations through open() and mmap, where the mapping ends on a page boundary.
  const std::vector<uint8_t> full = small_model().build();
  const std::string path = temp_path("fuzz.gguf");
  FuzzStats st;
  for (size_t n = 0; n <= full.size(); n += 7) {
    write_file(path, std::vector<uint8_t>(full.begin(), full.begin() + (long)n));
    try {
      GgufFile f = GgufFile::open(path);
      touch_everything(f);
      ++st.ok;
    } catch (const ModelError& e) {
      CHECK_MSG(e.code == "E_MODEL_CORRUPT" || e.code == "E_MODEL_UNSUPPORTED", e.code + ": " + e.message);
      CHECK_MSG(e.message.find(path) == 0, e.message);
      ++st.corrupt;
    }
  }
  unlink(path.c_str());
  CHECK(st.corrupt > 0);
}

// ---- Real models -------------------------------------------------------------------------------

TEST(gguf, real_stories260k_has_the_documented_metadata_and_tensors) {
  const std::string dir = models_dir();
  if (dir.empty()) return;
  GgufFile f = GgufFile::open(dir + "/stories260K.gguf");
  const GgufMetadata& m = f.metadata();
  CHECK_EQ(f.version(), 3u);
  CHECK_EQ(f.file_size(), 1185376ull);
  CHECK_EQ(f.tensors().size(), (size_t)48);
  CHECK_EQ(m.size(), (size_t)19);
  CHECK(m.get_string("general.architecture") == "llama");
  CHECK_EQ(m.get_u32("llama.context_length"), 2048u);
  CHECK_EQ(m.get_u32("llama.embedding_length"), 64u);
  CHECK_EQ(m.get_u32("llama.feed_forward_length"), 172u);
  CHECK_EQ(m.get_u32("llama.block_count"), 5u);
  CHECK_EQ(m.get_u32("llama.attention.head_count"), 8u);
  CHECK_EQ(m.get_u32("llama.attention.head_count_kv"), 4u);
  CHECK_EQ(m.get_u32("llama.rope.dimension_count"), 8u);
  CHECK(!m.has("llama.rope.freq_base"));
  CHECK(m.get_f32("llama.rope.freq_base", 10000.0f) == 10000.0f);
  CHECK(m.get_f32("llama.attention.layer_norm_rms_epsilon") == 1e-5f);
  CHECK(m.get_string("tokenizer.ggml.model") == "llama");
  const std::vector<std::string> tokens = m.get_str_array("tokenizer.ggml.tokens");
  CHECK_EQ(tokens.size(), (size_t)512);
  if (tokens.size() == 512) CHECK(tokens[0] == "<unk>" && tokens[1] == "<s>" && tokens[2] == "</s>" && tokens[3] == "<0x00>");
  const std::vector<float> scores = m.get_f32_array("tokenizer.ggml.scores");
  CHECK_EQ(scores.size(), (size_t)512);
  CHECK_EQ(m.get_u32("tokenizer.ggml.seperator_token_id"), 0xFFFFFFFFu);
  int64_t elements = 0;
  for (const GgufTensor& t : f.tensors()) {
    CHECK(t.type == DType::F32);
    elements += t.n_elements();
  }
  CHECK_EQ(elements, 292800ll);
  const GgufTensor& k = f.tensor("blk.0.attn_k.weight");
  CHECK(k.ne[0] == 64 && k.ne[1] == 32);
  const GgufTensor& down = f.tensor("blk.4.ffn_down.weight");
  CHECK(down.ne[0] == 172 && down.ne[1] == 64);
  const GgufTensor& emb = f.tensor("token_embd.weight");
  const GgufTensor& out = f.tensor("output.weight");
  CHECK(emb.bytes == out.bytes && std::memcmp(emb.data, out.data, emb.bytes) == 0);  // tied classifier
}

TEST(gguf, real_tinyllama_q4_0_and_tiny_random_f16_parse) {
  const std::string dir = models_dir();
  if (dir.empty()) return;
  GgufFile q = GgufFile::open(dir + "/TinyLLama-v0-Q4_0.gguf");
  CHECK_EQ(q.tensors().size(), (size_t)75);
  int n_q4 = 0, n_f32 = 0;
  for (const GgufTensor& t : q.tensors()) {
    n_q4 += t.type == DType::Q4_0;
    n_f32 += t.type == DType::F32;
  }
  CHECK_EQ(n_q4, 58);
  CHECK_EQ(n_f32, 17);
  CHECK_EQ(q.metadata().get_u32("general.file_type"), 2u);
  CHECK_EQ(q.metadata().get_u32("llama.attention.head_count"), 16u);
  CHECK(q.metadata().get_f32("llama.attention.layer_norm_rms_epsilon") == 1e-6f);
  const GgufTensor& out = q.tensor("output.weight");
  CHECK(out.type == DType::Q4_0 && out.ne[0] == 64 && out.ne[1] == 32000);
  CHECK_EQ(q.metadata().get_str_array("tokenizer.ggml.tokens").size(), (size_t)32000);

  GgufFile r = GgufFile::open(dir + "/llama-2-tiny-random.gguf");
  CHECK_EQ(r.tensors().size(), (size_t)12);
  CHECK_EQ(r.metadata().size(), (size_t)18);
  CHECK(r.metadata().get_string("general.name") == "LLaMA v2");
  CHECK(r.tensor("token_embd.weight").type == DType::F16);
  CHECK(r.tensor("output_norm.weight").type == DType::F32);
  int64_t elements = 0;
  for (const GgufTensor& t : r.tensors()) elements += t.n_elements();
  CHECK_EQ(elements, 513048ll);

  for (const char* vocab : {"ggml-vocab-llama-spm.gguf", "ggml-vocab-phi-3.gguf", "ggml-vocab-gpt-2.gguf"}) {
    GgufFile v = GgufFile::open(dir + "/vocab/" + vocab);
    CHECK(v.tensors().empty());
    CHECK(!v.metadata().get_str_array("tokenizer.ggml.tokens").empty());
  }
}

TEST(gguf, real_nonconforming_files_are_refused_with_the_reason) {
  const std::string dir = models_dir();
  if (dir.empty()) return;
  EXPECT_ERROR(GgufFile::open(dir + "/legacy/tinyllamas-stories-260k-f32.gguf"), "E_MODEL_UNSUPPORTED",
               "tinyllamas-stories-260k-f32.gguf: ", "GGUF v1 is obsolete");
  EXPECT_ERROR(GgufFile::open(dir + "/legacy/tinyllamas-stories-260k-q8_0.gguf"), "E_MODEL_CORRUPT",
               "tinyllamas-stories-260k-q8_0.gguf: tensor '", "ffn_down.weight' (Q8_0): row of 172 elements is not "
               "a multiple of the block size 32");
  EXPECT_ERROR(GgufFile::open(dir + "/vocab/ggml-vocab-dbrx.gguf"), "E_MODEL_CORRUPT", "ggml-vocab-dbrx.gguf: ",
               "'general.file_type'", "duplicate key");
  EXPECT_ERROR(GgufFile::open(dir + "/legacy/TinyLLama-v0.ggmlv3.q4_0.bin"), "E_MODEL_UNSUPPORTED",
               "TinyLLama-v0.ggmlv3.q4_0.bin: ", "pre-GGUF GGML/GGJT", "GGJT v3", "convert");
}
