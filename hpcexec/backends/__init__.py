"""Scheduler dialects. Each backend is pure: it renders and parses, it never runs anything."""
