"""Structural edits of a model: hidden-channel removal (width) and layer removal (depth)."""
