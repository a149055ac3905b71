"""Japanese benchmarks (Swallow evaluation conventions) on Hugging Face and GGUF models."""
