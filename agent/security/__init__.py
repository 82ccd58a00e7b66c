"""Pairing, authentication and secret handling (docs/architecture.md, 'Security')."""
