"""Scaling laws (forms, presets, fitting) and the training-side planner. Imports without torch."""
