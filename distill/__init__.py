"""Cascade traces, codec tokens, and the direct model's training and eval (see README.md)."""
