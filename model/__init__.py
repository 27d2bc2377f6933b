"""The one transformer (Llama), the text LLM, the direct speech model and its generator (see README.md)."""
