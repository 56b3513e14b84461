"""Published configurations of the small LLMs edgescale's benchmarks build random-weight
checkpoints from (never downloaded: the values are copied here, each with its source).
Random weights serve time, memory and speed measurements only."""

# SmolLM2-135M: huggingface.co/HuggingFaceTB/SmolLM2-135M/blob/main/config.json
# (LlamaForCausalLM, 30 layers of width 576, 9 heads in 3 KV groups, tied embeddings).
SMOLLM2_135M = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "bos_token_id": 0,
    "eos_token_id": 0,
}
# Qwen2.5-0.5B: huggingface.co/Qwen/Qwen2.5-0.5B/blob/main/config.json
# (Qwen2ForCausalLM, 24 layers of width 896, 14 heads in 2 KV groups, tied embeddings, QKV biases).
QWEN25_05B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_hidden_layers": 24,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "tie_word_embeddings": True,
    "use_sliding_window": False,
}
# TinyLlama-1.1B: huggingface.co/TinyLlama/TinyLlama-1.1B-intermediate-step-1431k-3T/blob/main/config.json
# (LlamaForCausalLM, 1,100,048,384 parameters, untied embeddings).
TINYLLAMA_1_1B = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "num_hidden_layers": 22,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "vocab_size": 32000,
    "max_position_embeddings": 2048,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-5,
    "hidden_act": "silu",
    "tie_word_embeddings": False,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "torch_dtype": "float32",
}
