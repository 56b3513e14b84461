"""Models users already have: Hugging Face causal LMs from a local folder, and ONNX files.

A study's ``hf_model: {path: DIR}`` replaces the trained ladder: the checkpoint is loaded
with transformers (never from the hub), compressed by the same recipes (structured
pruning and distillation for GPT-2 and Llama-family layouts, :mod:`edgescale.hf.prune`),
exported with optimum's ``text-generation-with-past`` exporter, quantized by the same
``quantize.*`` steps (plus optimum's ORTQuantizer presets, ``quantize.optimum_preset``),
scored in bits per byte with the model's own tokenizer and measured like every variant.

Nothing here downloads: every load passes ``local_files_only=True`` and the optimum
quantizer gets its config object, so no call asks the hub; importing this package sets
no environment variable (``import edgescale.compress`` reaches it). transformers and
optimum are the optional extra ``edgescale[hf]``; they are imported inside the
functions that need them.
"""
