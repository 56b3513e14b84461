"""The tiny study the end-to-end tests share: two sizes, a distilled student, fp32 and int8
dynamic, a predicted device and a loss target every variant meets (about 30 s on 2 cores).
``tests/conftest.py::tiny_run`` runs it once per session."""

TINY = {
    "schema_version": 1,
    "name": "tiny",
    "seed": 0,
    "ladder": {
        "block_size": 32,
        "sizes": [
            {"name": "a", "n_layer": 1, "n_head": 2, "n_embd": 16},
            {"name": "b", "n_layer": 2, "n_head": 2, "n_embd": 32},
        ],
    },
    "training": {
        "tokens_per_param": 1,
        "min_tokens": 20_480,
        "max_tokens": 40_960,
        "batch_size": 16,
        "schedule": "wsd",
        "cooled_fractions": [0.25, 0.5, 1.0],
        "cooled_eval_tokens": 1024,
        "eval_every_tokens": 10_240,
        "eval_tokens": 1024,
        "threads": 2,
        "learning_rate": 0.01,
    },
    "evaluation": {"context_length": 32, "stride": 32, "max_bytes": 2048, "batch_size": 8},
    "measurement": {"prompt_len": 16, "decode_context": 32, "repeats": 5, "warmup": 1, "threads": 1},
    "recipes": ["fp32", "int8_dynamic"],
    "devices": ["host", "rpi5-8gb"],
    "distillation": {"teacher": "b", "students": ["a"]},
    "loss_target_bpb": 6.0,  # the tiny models reach about 4.9 on validation
}
