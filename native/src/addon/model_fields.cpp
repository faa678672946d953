#include "addon/model_fields.h"

namespace edgellm::addon {

void set_architecture_fields(Napi::Env env, Napi::Object& o, const ModelConfig& c) {
  auto num = [&](const char* k, double v) { o.Set(k, Napi::Number::New(env, v)); };
  num("n_vocab", (double)c.n_vocab);
  num("n_embd", (double)c.n_embd);
  num("n_layer", (double)c.n_layer);
  num("n_head", (double)c.n_head);
  num("n_head_kv", (double)c.n_head_kv);
  num("head_dim", (double)c.head_dim);
  num("n_ff", (double)(c.is_moe() ? c.n_ff_expert : c.n_ff));
  num("n_expert", (double)c.n_expert);
  num("n_expert_used", (double)c.n_expert_used);
  num("context_length", (double)c.context_length);
  num("sliding_window", (double)c.sliding_window);
  num("kv_lora_rank", (double)c.mla.kv_lora_rank);
  o.Set("encoder", Napi::Boolean::New(env, c.encoder));
  o.Set("pooling", Napi::String::New(env, pooling_name(c.pooling)));
}

}  // namespace edgellm::addon
