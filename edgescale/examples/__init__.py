"""Example user modules for the bring-your-own-model path (see studies/custom_encoder.yaml)."""
