"""Few-shot prompts in the Swallow suite's format (llm-jp-eval's Alpaca-style Japanese frame).

    以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。

    ### 指示:
    {instruction}

    ### 入力:
    {shot input}

    ### 応答:
    {shot output}
    … one block per shot …

    ### 入力:
    {input}

    ### 応答:
    ← the model continues here; its answer ends at a blank line
"""
HEADER = "以下は、タスクを説明する指示と、文脈のある入力の組み合わせです。要求を適切に満たす応答を書きなさい。"
STOP = ("\n\n",)   # llm-jp-eval keeps the output up to the first blank line


def few_shot_prompt(instruction, shots, text):
    """The prompt for input ``text`` after ``shots``, a list of (input, output) pairs."""
    prompt = f"{HEADER}\n\n### 指示:\n{instruction}"
    for shot_input, shot_output in shots:
        prompt += f"\n\n### 入力:\n{shot_input}\n\n### 応答:\n{shot_output}"
    return prompt + f"\n\n### 入力:\n{text}\n\n### 応答:\n"


def cut_at_stop(text, stop):
    """``text`` up to the first stop sequence, stripped."""
    for sequence in stop:
        if sequence and sequence in text:
            text = text[: text.index(sequence)]
    return text.strip()
