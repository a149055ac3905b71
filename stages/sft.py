"""Stage `instruct`: instruction tuning on Japanese chat data (``stages.prepare_chat``), TinySwallow's
second stage. ``instruct.method``: ``distill`` (any loss of the TAID core, TAID by default, with the
stage's own ``instruct.teacher``) or ``sft`` (cross-entropy on assistant tokens only).

Writes the chat model, ``metrics/instruct.json`` (validation loss on assistant tokens, and KL to the
teacher when distilling) and per-step curves.
"""
from stages.student import student_stage_main

if __name__ == "__main__":
    student_stage_main("instruct", "sft", __doc__)
