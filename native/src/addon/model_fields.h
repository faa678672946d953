#pragma once
#include <napi.h>

#include "model/model_config.h"

namespace edgellm::addon {

// The architecture fields modelConfig() and Model.info() share, set on `o` in this order:
// n_vocab, n_embd, n_layer, n_head, n_head_kv, head_dim, n_ff (one expert's for MoE), n_expert,
// n_expert_used, context_length, sliding_window, kv_lora_rank, encoder (bert, nomic-bert),
// pooling (pooling_type's name: none, mean, cls, last, rank).
void set_architecture_fields(Napi::Env env, Napi::Object& o, const ModelConfig& c);

}  // namespace edgellm::addon
