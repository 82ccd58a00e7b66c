"""Test helpers: real processes on loopback."""
