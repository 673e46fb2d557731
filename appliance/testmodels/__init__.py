"""Small, offline, deterministic stand-in models for tests."""
