"""Hugging Face directories in and out: GPT-2, and Llama, Mistral, Qwen2 and Qwen3; chat templates."""
