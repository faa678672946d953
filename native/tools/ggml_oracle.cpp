// edgellm_ggml_oracle: runs node-llama-cpp's own prebuilt ggml / llama.cpp libraries, so that
// tests can hold edgellm's quantizers, dequantizers and model quantizer to ggml's bytes.
// It is a test tool (x86-64 only, not part of the addon): it dlopen()s libggml-base.so and
// libllama*.so from the directory given by --lib-dir or $EDGELLM_LLAMA_LIB_DIR, or else from
// node_modules/@node-llama-cpp/linux-x64/bins/linux-x64 found next to the executable or the
// working directory.
//
//   edgellm_ggml_oracle [--lib-dir DIR] quantize-rows TYPE NROWS NCOLS IN.f32 OUT.bin
//       ggml_quantize_chunk(TYPE, ..., imatrix = NULL): NROWS rows of NCOLS floats -> raw blocks.
//   edgellm_ggml_oracle [--lib-dir DIR] quantize-ref TYPE N IN.f32 OUT.bin
//       the type's from_float_ref (also for the activation formats Q8_1 and Q8_K).
//   edgellm_ggml_oracle [--lib-dir DIR] dequantize TYPE N IN.bin OUT.f32
//       the type's to_float on N elements.
//   edgellm_ggml_oracle [--lib-dir DIR] quantize-model IN.gguf OUT.gguf FTYPE [THREADS]
//         [--allow-requantize] [--pure] [--leave-output]
//       llama_model_quantize with llama_model_quantize_default_params() and FTYPE.
//   edgellm_ggml_oracle [--lib-dir DIR] params
//       prints llama_model_quantize_default_params() field by field (checks the struct layout).
//
// The C declarations below are those of the llama.cpp release node-llama-cpp 3.21.1 bundles
// (node-llama-cpp/llama/binariesGithubRelease.json: "v0.4.0"; include/llama.h and
// ggml/include/ggml.h of that tree). A different release may change llama_model_quantize_params:
// `params` and a quantize-model round trip are how the tests notice.
#include <dirent.h>
#include <dlfcn.h>
#include <strings.h>
#include <unistd.h>

#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

namespace {

// ---- ggml.h (v0.4.0) ----
constexpr int kGgmlTypeCount = 43;  // GGML_TYPE_COUNT

using ggml_to_float_t = void (*)(const void* x, float* y, int64_t k);
using ggml_from_float_t = void (*)(const float* x, void* y, int64_t k);

struct ggml_type_traits {
  const char* type_name;
  int64_t blck_size;
  int64_t blck_size_interleave;
  size_t type_size;
  bool is_quantized;
  ggml_to_float_t to_float;
  ggml_from_float_t from_float_ref;
};

// ---- llama.h (v0.4.0) ----
struct llama_model_quantize_params {
  int32_t nthread;
  int32_t ftype;                 // enum llama_ftype
  int32_t output_tensor_type;    // enum ggml_type
  int32_t token_embedding_type;  // enum ggml_type
  bool allow_requantize;
  bool quantize_output_tensor;
  bool only_copy;
  bool pure;
  bool keep_split;
  bool dry_run;
  const void* imatrix;       // const struct llama_model_imatrix_data *
  const void* kv_overrides;  // const struct llama_model_kv_override *
  const void* tt_overrides;  // const struct llama_model_tensor_override *
  const int32_t* prune_layers;
  size_t max_buf_size;
};
static_assert(offsetof(llama_model_quantize_params, allow_requantize) == 16, "llama.h layout");
static_assert(offsetof(llama_model_quantize_params, imatrix) == 24, "llama.h layout");
static_assert(offsetof(llama_model_quantize_params, max_buf_size) == 56, "llama.h layout");
static_assert(sizeof(llama_model_quantize_params) == 64, "llama.h layout");

// llama_ftype names as llama-quantize spells them (the ones that need no importance matrix).
struct FtypeName {
  const char* name;
  int32_t value;
};
constexpr FtypeName kFtypes[] = {
    {"F32", 0},     {"F16", 1},      {"Q4_0", 2},     {"Q4_1", 3},     {"Q8_0", 7},
    {"Q5_0", 8},    {"Q5_1", 9},     {"Q2_K", 10},    {"Q3_K_S", 11},  {"Q3_K_M", 12},
    {"Q3_K_L", 13}, {"Q4_K_S", 14},  {"Q4_K_M", 15},  {"Q5_K_S", 16},  {"Q5_K_M", 17},
    {"Q6_K", 18},   {"Q2_K_S", 21},  {"IQ4_NL", 25},  {"IQ4_XS", 30},  {"BF16", 32},
};

struct Ggml {
  void* base = nullptr;
  const ggml_type_traits* (*get_type_traits)(int type) = nullptr;
  size_t (*quantize_chunk)(int type, const float* src, void* dst, int64_t start, int64_t nrows,
                           int64_t n_per_row, const float* imatrix) = nullptr;
  bool (*quantize_requires_imatrix)(int type) = nullptr;
  size_t (*row_size)(int type, int64_t ne) = nullptr;
};

struct Llama {
  void* lib = nullptr;
  llama_model_quantize_params (*default_params)() = nullptr;
  uint32_t (*model_quantize)(const char* in, const char* out,
                             const llama_model_quantize_params* params) = nullptr;
  void (*backend_init)() = nullptr;
};

[[noreturn]] void die(const std::string& msg) {
  std::fprintf(stderr, "edgellm_ggml_oracle: %s\n", msg.c_str());
  std::exit(1);
}

bool is_dir(const std::string& p) {
  DIR* d = opendir(p.c_str());
  if (!d) return false;
  closedir(d);
  return true;
}

std::string exe_dir() {
  char buf[PATH_MAX];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return ".";
  buf[n] = '\0';
  std::string s(buf);
  const size_t slash = s.rfind('/');
  return slash == std::string::npos ? "." : s.substr(0, slash);
}

// The prebuilt x64 CPU build of node-llama-cpp (a devDependency of edgellm).
constexpr const char* kBinsSubdir = "node_modules/@node-llama-cpp/linux-x64/bins/linux-x64";

// The library directory, and where it came from (for error messages).
struct LibDir {
  std::string path;
  std::string origin;
};

LibDir find_lib_dir(const std::string& flag) {
  if (!flag.empty()) return {flag, "--lib-dir"};
  if (const char* env = std::getenv("EDGELLM_LLAMA_LIB_DIR"); env && *env) return {env, "$EDGELLM_LLAMA_LIB_DIR"};
  // build/native/edgellm_ggml_oracle -> the package root two levels up; then the cwd.
  const std::string candidates[] = {exe_dir() + "/../../" + kBinsSubdir, exe_dir() + "/../" + kBinsSubdir,
                                    std::string(kBinsSubdir)};
  for (const std::string& c : candidates)
    if (is_dir(c)) return {c, "node-llama-cpp's x64 package"};
  die(std::string("node-llama-cpp's prebuilt libraries were not found (looked for ") + kBinsSubdir +
      " next to the executable and in the working directory); run `npm install` in the edgellm "
      "checkout (node-llama-cpp 3.21.1 is a devDependency, its x64 binaries come in "
      "@node-llama-cpp/linux-x64), or pass --lib-dir DIR / set EDGELLM_LLAMA_LIB_DIR to the "
      "directory holding libggml-base.so and libllama*.so");
}

void* sym(void* lib, const char* name, const std::string& file) {
  void* p = dlsym(lib, name);
  if (!p) die(std::string("symbol ") + name + " is missing from " + file + " (a different llama.cpp release?)");
  return p;
}

Ggml load_ggml(const LibDir& dir) {
  Ggml g;
  const std::string file = dir.path + "/libggml-base.so";
  // RTLD_GLOBAL: libllama's DT_NEEDED libggml-base.so then resolves to this very copy.
  g.base = dlopen(file.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (!g.base)
    die("cannot load libggml-base.so from " + dir.path + " (" + dir.origin + "): " + dlerror() +
        " (install the devDependency node-llama-cpp@3.21.1 with `npm install`, which brings "
        "@node-llama-cpp/linux-x64, or point --lib-dir / $EDGELLM_LLAMA_LIB_DIR at its bins/linux-x64)");
  g.get_type_traits = reinterpret_cast<decltype(g.get_type_traits)>(sym(g.base, "ggml_get_type_traits", file));
  g.quantize_chunk = reinterpret_cast<decltype(g.quantize_chunk)>(sym(g.base, "ggml_quantize_chunk", file));
  g.quantize_requires_imatrix = reinterpret_cast<decltype(g.quantize_requires_imatrix)>(
      sym(g.base, "ggml_quantize_requires_imatrix", file));
  g.row_size = reinterpret_cast<decltype(g.row_size)>(sym(g.base, "ggml_row_size", file));
  return g;
}

Llama load_llama(const LibDir& lib_dir) {
  const std::string& dir = lib_dir.path;
  // node-llama-cpp ships it with its release in the name (libllama.v0.4.0.so); llama.cpp's own
  // builds call it libllama.so. libllama-common.so is a different library.
  std::string file;
  if (DIR* d = opendir(dir.c_str())) {
    while (dirent* e = readdir(d)) {
      const std::string n = e->d_name;
      if (n.rfind("libllama", 0) == 0 && n.rfind("libllama-", 0) != 0 && n.size() > 3 &&
          n.compare(n.size() - 3, 3, ".so") == 0) {
        file = dir + "/" + n;
        break;
      }
    }
    closedir(d);
  }
  if (file.empty())
    die("no libllama*.so in " + dir + " (" + lib_dir.origin + ")" +
        " (install the devDependency node-llama-cpp@3.21.1 with `npm install`, or point --lib-dir at "
        "node_modules/@node-llama-cpp/linux-x64/bins/linux-x64)");
  Llama l;
  l.lib = dlopen(file.c_str(), RTLD_NOW | RTLD_GLOBAL);
  if (!l.lib) die("cannot load " + file + ": " + dlerror());
  l.default_params = reinterpret_cast<decltype(l.default_params)>(
      sym(l.lib, "llama_model_quantize_default_params", file));
  l.model_quantize = reinterpret_cast<decltype(l.model_quantize)>(sym(l.lib, "llama_model_quantize", file));
  l.backend_init = reinterpret_cast<decltype(l.backend_init)>(sym(l.lib, "llama_backend_init", file));
  return l;
}

// A ggml type by its ggml name ("q4_K", "iq4_nl", case-insensitive) or its number.
int parse_type(const Ggml& g, const std::string& s) {
  char* end = nullptr;
  const long v = std::strtol(s.c_str(), &end, 10);
  if (!s.empty() && *end == '\0') {
    if (v < 0 || v >= kGgmlTypeCount) die("type number " + s + " is out of range 0.." + std::to_string(kGgmlTypeCount - 1));
    return (int)v;
  }
  std::string known;
  for (int t = 0; t < kGgmlTypeCount; ++t) {
    const ggml_type_traits* tr = g.get_type_traits(t);
    // Removed types keep a slot with a placeholder name ("DEPRECATED", "TYPE_Q4_0_4_4 REMOVED, ...").
    if (!tr || !tr->type_name || std::strcmp(tr->type_name, "DEPRECATED") == 0 || std::strchr(tr->type_name, ' '))
      continue;
    if (strcasecmp(tr->type_name, s.c_str()) == 0) return t;
    known += known.empty() ? "" : " ";
    known += tr->type_name;
  }
  die("unknown ggml type '" + s + "' (known: " + known + ")");
}

int64_t parse_count(const std::string& s, const char* what) {
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || *end != '\0' || v <= 0) die(std::string(what) + " must be a positive integer, got '" + s + "'");
  return v;
}

std::vector<uint8_t> read_file(const std::string& path, size_t expect_bytes) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) die("cannot open " + path + ": " + std::strerror(errno));
  std::vector<uint8_t> buf(expect_bytes + 1);
  const size_t n = std::fread(buf.data(), 1, buf.size(), f);
  std::fclose(f);
  if (n != expect_bytes)
    die(path + " holds " + (n > expect_bytes ? "more than " + std::to_string(expect_bytes) : std::to_string(n)) +
        " bytes; expected exactly " + std::to_string(expect_bytes));
  buf.resize(expect_bytes);
  return buf;
}

void write_file(const std::string& path, const void* data, size_t bytes) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) die("cannot create " + path + ": " + std::strerror(errno));
  const size_t n = std::fwrite(data, 1, bytes, f);
  if (std::fclose(f) != 0 || n != bytes) die("cannot write " + path + ": " + std::strerror(errno));
}

const ggml_type_traits& traits_checked(const Ggml& g, int type, int64_t n, const std::string& type_arg) {
  const ggml_type_traits* tr = g.get_type_traits(type);
  if (!tr || !tr->type_name || tr->blck_size <= 0) die("ggml type " + type_arg + " is not a usable type in this release");
  if (n % tr->blck_size != 0)
    die(std::to_string(n) + " elements is not a whole number of " + tr->type_name + " blocks (" +
        std::to_string(tr->blck_size) + " elements each)");
  return *tr;
}

int cmd_quantize_rows(const Ggml& g, const std::vector<std::string>& a) {
  if (a.size() != 5) die("usage: quantize-rows TYPE NROWS NCOLS IN.f32 OUT.bin");
  const int type = parse_type(g, a[0]);
  const int64_t nrows = parse_count(a[1], "NROWS"), ncols = parse_count(a[2], "NCOLS");
  traits_checked(g, type, ncols, a[0]);
  if (g.quantize_requires_imatrix(type)) die("ggml type " + a[0] + " cannot be quantized without an importance matrix");
  const std::vector<uint8_t> in = read_file(a[3], (size_t)(nrows * ncols) * sizeof(float));
  const size_t out_bytes = g.row_size(type, ncols) * (size_t)nrows;
  std::vector<uint8_t> out(out_bytes);
  const size_t wrote = g.quantize_chunk(type, reinterpret_cast<const float*>(in.data()), out.data(), 0, nrows,
                                        ncols, nullptr);
  if (wrote != out_bytes) die("ggml_quantize_chunk wrote " + std::to_string(wrote) + " bytes, expected " + std::to_string(out_bytes));
  write_file(a[4], out.data(), out.size());
  return 0;
}

int cmd_quantize_ref(const Ggml& g, const std::vector<std::string>& a) {
  if (a.size() != 4) die("usage: quantize-ref TYPE N IN.f32 OUT.bin");
  const int type = parse_type(g, a[0]);
  const int64_t n = parse_count(a[1], "N");
  const ggml_type_traits& tr = traits_checked(g, type, n, a[0]);
  ggml_from_float_t quantize = tr.from_float_ref;
  // Q8_K's traits in ggml-base leave from_float_ref empty (the CPU backend has the fast one), but
  // ggml-base exports the reference itself.
  if (!quantize)
    quantize = reinterpret_cast<ggml_from_float_t>(dlsym(g.base, (std::string("quantize_row_") + tr.type_name + "_ref").c_str()));
  if (!quantize) die(std::string("ggml has no reference quantizer (from_float_ref) for ") + tr.type_name);
  const std::vector<uint8_t> in = read_file(a[2], (size_t)n * sizeof(float));
  std::vector<uint8_t> out(g.row_size(type, n));
  quantize(reinterpret_cast<const float*>(in.data()), out.data(), n);
  write_file(a[3], out.data(), out.size());
  return 0;
}

int cmd_dequantize(const Ggml& g, const std::vector<std::string>& a) {
  if (a.size() != 4) die("usage: dequantize TYPE N IN.bin OUT.f32");
  const int type = parse_type(g, a[0]);
  const int64_t n = parse_count(a[1], "N");
  const ggml_type_traits& tr = traits_checked(g, type, n, a[0]);
  if (!tr.to_float) die(std::string("ggml has no to_float for ") + tr.type_name);
  const std::vector<uint8_t> in = read_file(a[2], g.row_size(type, n));
  std::vector<float> out((size_t)n);
  tr.to_float(in.data(), out.data(), n);
  write_file(a[3], out.data(), out.size() * sizeof(float));
  return 0;
}

int32_t parse_ftype(const std::string& s) {
  std::string known;
  for (const FtypeName& f : kFtypes) {
    if (strcasecmp(f.name, s.c_str()) == 0) return f.value;
    known += known.empty() ? "" : " ";
    known += f.name;
  }
  die("unknown FTYPE '" + s + "' (known: " + known + ")");
}

int cmd_quantize_model(const Llama& l, const std::vector<std::string>& args) {
  std::vector<std::string> a;
  bool allow_requantize = false, pure = false, leave_output = false;
  for (const std::string& s : args) {
    if (s == "--allow-requantize") allow_requantize = true;
    else if (s == "--pure") pure = true;
    else if (s == "--leave-output") leave_output = true;
    else if (s.rfind("--", 0) == 0) die("unknown quantize-model option " + s + " (known: --allow-requantize --pure --leave-output)");
    else a.push_back(s);
  }
  if (a.size() != 3 && a.size() != 4)
    die("usage: quantize-model IN.gguf OUT.gguf FTYPE [THREADS] [--allow-requantize] [--pure] [--leave-output]");
  llama_model_quantize_params p = l.default_params();
  p.ftype = parse_ftype(a[2]);
  p.nthread = a.size() == 4 ? (int32_t)parse_count(a[3], "THREADS") : 1;
  p.allow_requantize = allow_requantize;
  p.pure = pure;
  p.quantize_output_tensor = !leave_output;
  l.backend_init();
  if (l.model_quantize(a[0].c_str(), a[1].c_str(), &p) != 0)
    die("llama_model_quantize failed on " + a[0] + " (its log above says why)");
  return 0;
}

int cmd_params(const Llama& l) {
  const llama_model_quantize_params p = l.default_params();
  std::printf("nthread %d\nftype %d\noutput_tensor_type %d\ntoken_embedding_type %d\n", p.nthread, p.ftype,
              p.output_tensor_type, p.token_embedding_type);
  std::printf("allow_requantize %d\nquantize_output_tensor %d\nonly_copy %d\npure %d\nkeep_split %d\ndry_run %d\n",
              p.allow_requantize, p.quantize_output_tensor, p.only_copy, p.pure, p.keep_split, p.dry_run);
  std::printf("imatrix %p\nkv_overrides %p\ntt_overrides %p\nprune_layers %p\nmax_buf_size %zu\n", p.imatrix,
              p.kv_overrides, p.tt_overrides, (const void*)p.prune_layers, p.max_buf_size);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  std::string lib_dir_flag;
  if (args.size() >= 2 && args[0] == "--lib-dir") {
    lib_dir_flag = args[1];
    args.erase(args.begin(), args.begin() + 2);
  }
  if (args.empty())
    die("usage: edgellm_ggml_oracle [--lib-dir DIR] quantize-rows|quantize-ref|dequantize|quantize-model|params ... "
        "(see the comment at the top of native/tools/ggml_oracle.cpp)");
  const std::string cmd = args[0];
  const std::vector<std::string> rest(args.begin() + 1, args.end());
  const LibDir dir = find_lib_dir(lib_dir_flag);
  const Ggml g = load_ggml(dir);
  if (cmd == "quantize-rows") return cmd_quantize_rows(g, rest);
  if (cmd == "quantize-ref") return cmd_quantize_ref(g, rest);
  if (cmd == "dequantize") return cmd_dequantize(g, rest);
  if (cmd == "quantize-model") return cmd_quantize_model(load_llama(dir), rest);
  if (cmd == "params") return cmd_params(load_llama(dir));
  die("unknown subcommand '" + cmd + "' (known: quantize-rows quantize-ref dequantize quantize-model params)");
}
