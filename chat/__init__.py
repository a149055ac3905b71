"""Chat (instruction) data for the instruct stage: formats, chat template, assistant-only masks, arrays."""
