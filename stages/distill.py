"""Stage `distill`: distil the student from its teacher on the Japanese corpus with the loss chosen in
params (TAID by default), the teacher run live or read from its top-k cache (``distill.teacher``).

Writes the student as a Hugging Face model directory, ``metrics/distill.json`` (final validation loss,
KL(teacher ‖ student), perplexity, final t) and per-step curves for ``dvc plots``.
"""
from stages.student import student_stage_main

if __name__ == "__main__":
    student_stage_main("distill", "distill", __doc__)
