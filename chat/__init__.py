"""Chat (instruction) data for the instruct stage.

formats   messages / ShareGPT / Alpaca rows (JSON Lines, Parquet) → one normal form, bad rows counted
template  ChatML for the tiny tokenizer; answer (target) tokens found from prefix renderings of any template
pack      truncation by whole turns; rows of ids and targets, one conversation each or packed
prepare   sources mixed by weight, split by conversation, the whole pipeline behind stages/prepare_chat.py
report    the stage's printed summary
"""
