"""Exports of the distilled model: GGUF for llama.cpp, MLC for WebLLM, and their verifiers."""
