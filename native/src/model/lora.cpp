#include "model/lora.h"

#include <algorithm>
#include <map>

namespace edgellm {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

std::string shape(const GgufTensor& t) { return shape_string(t.ne, std::max(t.n_dims, 1)); }

// The base matrices an adapter may target, by tensor name: the ones ForwardPass multiplies
// whole with one column per token of the step (the attention and dense FFN projections, the
// MoE router, an untied classifier). A matrix is listed only when it is a whole tensor of the
// file, so row ranges of a fused tensor (phi3's attn_qkv, its gate+up) and stacked experts are not.
std::map<std::string, const WeightMatrix*> adaptable(const Model& base) {
  const ModelWeights& w = base.weights();
  std::vector<const WeightMatrix*> candidates;
  if (!w.tied_output) candidates.push_back(&w.output);
  for (const LayerWeights& L : w.layers)
    for (const WeightMatrix* m : {&L.wq, &L.wk, &L.wv, &L.wo, &L.ffn_gate, &L.ffn_up, &L.ffn_down, &L.router})
      if (m->present()) candidates.push_back(m);
  std::map<std::string, const WeightMatrix*> by_name;
  for (const GgufTensor& t : base.file().tensors()) {
    if (t.ne[2] != 1 || t.ne[3] != 1) continue;
    for (const WeightMatrix* m : candidates)
      if (m->data == t.data && m->rows == t.ne[1] && m->cols == t.ne[0]) by_name[t.name] = m;
  }
  return by_name;
}

}  // namespace

std::shared_ptr<const LoraAdapter> LoraAdapter::load(const std::string& path, const Model& base) {
  return from_file(GgufFile::open(path), base);
}

std::shared_ptr<const LoraAdapter> LoraAdapter::from_file(GgufFile file, const Model& base) {
  std::shared_ptr<LoraAdapter> a(new LoraAdapter(std::move(file)));
  const GgufFile& f = a->file_;
  const GgufMetadata& md = f.metadata();
  const std::string& p = f.path();
  auto unsupported = [&](const std::string& what) { throw ModelError("E_MODEL_UNSUPPORTED", p + ": " + what); };
  auto corrupt = [&](const std::string& what) { throw ModelError("E_MODEL_CORRUPT", p + ": " + what); };

  const std::string type = md.get_string("general.type", "");
  if (type != "adapter")
    unsupported("not a LoRA adapter (general.type is " + (type.empty() ? std::string("absent") : "'" + type + "'") +
                ", expected 'adapter'); pass a model file to loadModel/--model, and an adapter made by llama.cpp's "
                "convert_lora_to_gguf.py to --lora");
  const std::string adapter_type = md.get_string("adapter.type", "");
  if (adapter_type != "lora")
    unsupported("adapter.type is " + (adapter_type.empty() ? std::string("absent") : "'" + adapter_type + "'") +
                "; edgellm runs only 'lora' adapters");
  const ModelConfig& c = base.config();
  const std::string arch = md.get_string("general.architecture", "");
  if (arch != c.arch_name)
    unsupported("the adapter is for architecture '" + arch + "' but the model is '" + c.arch_name +
                "'; use an adapter trained for this base model");
  if (c.encoder || c.arch == Arch::Deepseek2)
    unsupported("LoRA adapters are not supported for '" + c.arch_name + "' models");
  // An activated LoRA (aLoRA) applies only after its invocation tokens; running it everywhere
  // would silently be another model.
  if (md.has("adapter.alora.invocation_tokens"))
    unsupported("an activated LoRA (adapter.alora.invocation_tokens): edgellm runs plain LoRA adapters only");
  a->alpha_ = md.get_f32("adapter.lora.alpha", 0.0f);

  // Pair the halves by the base tensor's name.
  struct Halves {
    const GgufTensor* a = nullptr;
    const GgufTensor* b = nullptr;
  };
  std::map<std::string, Halves> halves;
  for (const GgufTensor& t : f.tensors()) {
    if (ends_with(t.name, ".lora_a")) halves[t.name.substr(0, t.name.size() - 7)].a = &t;
    else if (ends_with(t.name, ".lora_b")) halves[t.name.substr(0, t.name.size() - 7)].b = &t;
    else if (ends_with(t.name, "_norm.weight")) continue;  // llama.cpp skips norm tensors too
    else corrupt("tensor '" + t.name + "' is neither a .lora_a nor a .lora_b tensor");
  }
  if (halves.empty()) corrupt("the adapter has no .lora_a/.lora_b tensor pairs");

  const std::map<std::string, const WeightMatrix*> targets = adaptable(base);
  for (const auto& [name, h] : halves) {
    if (!h.a || !h.b) corrupt("tensor '" + name + (h.a ? ".lora_b" : ".lora_a") + "' is missing (its pair has only one half)");
    const GgufTensor* bt = base.file().find_tensor(name);
    if (!bt) unsupported("tensor '" + name + "' does not exist in the base model " + base.file().path() + "; use the adapter's own base model");
    const auto it = targets.find(name);
    if (it == targets.end())
      unsupported("tensor '" + name + "': edgellm does not adapt it (it adapts attn_q/k/v, attn_output, ffn_gate/up/down, "
                  "ffn_gate_inp and an untied output.weight)");
    const WeightMatrix& m = *it->second;
    const GgufTensor& ta = *h.a;
    const GgufTensor& tb = *h.b;
    if (ta.n_dims > 2 || tb.n_dims > 2 || ta.ne[0] != m.cols || tb.ne[1] != m.rows || ta.ne[1] != tb.ne[0])
      unsupported("tensor '" + name + "' is " + shape(*bt) + " in the base model but its adapter pair is lora_a " + shape(ta) +
                  ", lora_b " + shape(tb) + " (expected lora_a [" + std::to_string((long long)m.cols) + ", rank], lora_b [rank, " +
                  std::to_string((long long)m.rows) + "]); use an adapter made for this base model");
    LoraPair pair{WeightMatrix{ta.type, ta.data, ta.ne[1], ta.ne[0]}, WeightMatrix{tb.type, tb.data, tb.ne[1], tb.ne[0]}};
    a->max_rank_ = std::max(a->max_rank_, pair.rank());
    a->max_rows_ = std::max(a->max_rows_, m.rows);
    a->bytes_ += ta.bytes + tb.bytes;
    a->pairs_.emplace(&m, pair);
  }
  return a;
}

}  // namespace edgellm
