"""Classify two interleaved spirals with a small MLP: an example TensorFleet project (see ../README.md)."""
