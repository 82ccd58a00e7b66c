"""Pairing, authentication and secret handling (DESIGN decision 11)."""
