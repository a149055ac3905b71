"""The Hugging Face model card (README.md) of an exported model, from params.yaml and the metrics files.

Sections: YAML front matter (license, language, base model, pipeline tag, tags), lineage (teacher, student
init, data, loss and t schedule per training stage), evaluation (metrics/eval.json), quantized files (the
export metrics: size, perplexity and its drift), usage with transformers, llama.cpp and WebLLM, licence.
Whatever is missing is said in the card, never a crash.

Export metrics files read here: ``{"format": "gguf" | "mlc", "quantizations": {name: {"size_bytes",
"perplexity", "perplexity_reference", "perplexity_drift", "top1_agreement"?, "file"?}}}``.
"""
import json
from pathlib import Path

import yaml

from eval.report import markdown_table

CARD_SETTINGS = ("model_name", "repo_id", "license", "base_model", "language", "tags", "description")
DEFAULTS = {"model_name": "tsubame", "repo_id": "your-name/tsubame", "license": None, "base_model": None,
            "language": ["ja"], "tags": [], "description": None}
BASE_TAGS = ["japanese", "distillation", "taid", "tsubame"]
UNKNOWN = "not recorded in params.yaml"


def card_settings(params):
    settings = params.get("model_card") or {}
    unknown = sorted(set(settings) - set(CARD_SETTINGS))
    if unknown:
        raise ValueError(f"model_card: unknown keys {unknown}; known: {', '.join(CARD_SETTINGS)}")
    return {**DEFAULTS, **settings}


def is_hub_id(source):
    """A hub id or model directory, not a config JSON trained from scratch here."""
    return isinstance(source, str) and not source.endswith(".json")


# -- front matter and lineage

def front_matter(settings, params, formats):
    base = settings["base_model"] or (params.get("distill") or {}).get("student")
    meta = {"license": settings["license"] or "other", "language": settings["language"]}
    if is_hub_id(base):
        meta["base_model"] = [base]
    meta.update(pipeline_tag="text-generation", library_name="transformers",
                tags=list(dict.fromkeys(BASE_TAGS + sorted(formats) + list(settings["tags"]))))
    return "---\n" + yaml.safe_dump(meta, sort_keys=False, allow_unicode=True) + "---\n"


def schedule_text(taid):
    if not taid:
        return "–"
    mode = "adaptive" if taid.get("adaptive", True) else "linear"
    return (f"{mode}, t {taid.get('t_start')} → {taid.get('t_end')}, "
            f"α {taid.get('alpha')}, β {taid.get('beta')}")


def loss_text(section):
    loss = section.get("loss")
    if loss is None:
        return UNKNOWN
    weight = section.get("ce_weight") or 0
    return f"{loss}" + (f" + {weight} × cross-entropy" if weight else "")


def data_text(sources):
    if not sources:
        return UNKNOWN
    if isinstance(sources, str):
        return f"`{sources}`"
    return ", ".join(f"{s.get('name', '?')} (`{s.get('path') or s.get('dataset', '?')}`)" for s in sources)


def teacher_text(block, stage_teacher_model=None):
    """A stage's ``teacher:`` block (or a bare source) as the card shows it: where the teacher comes from,
    resolved through the teacher stage's directory when it is one, and how it ran."""
    if not isinstance(block, dict):
        return block or stage_teacher_model or UNKNOWN
    source = block.get("source") or UNKNOWN
    record = Path(str(source)) / "teacher.json"
    if record.is_file():
        source = json.loads(record.read_text(encoding="utf-8")).get("source", source)
    return f"{source} ({block.get('mode', 'live')})"


def lineage_rows(params):
    """One row per training stage the params describe: stage, teacher, student init, data, loss, schedule."""
    distill, instruct = params.get("distill"), params.get("instruct")
    model = (params.get("teacher") or {}).get("model")
    rows = []
    if distill is not None:
        teacher = teacher_text(distill.get("teacher"), model)
        rows.append(("distill (TAID continued pre-training)", teacher, distill.get("student", UNKNOWN),
                     data_text((params.get("corpus") or {}).get("sources")), loss_text(distill),
                     schedule_text(distill.get("taid") if distill.get("loss") == "taid" else None)))
    if instruct is not None:
        teacher = "none (SFT)" if instruct.get("method") == "sft" else teacher_text(instruct.get("teacher"))
        rows.append(("instruct (instruction tuning)", teacher, "the distilled student",
                     data_text((params.get("chat") or {}).get("sources")), loss_text(instruct),
                     schedule_text(instruct.get("taid") if instruct.get("loss") == "taid" else None)))
    return rows


def lineage_section(params):
    rows = lineage_rows(params)
    lines = ["## Lineage", ""]
    if not rows:
        return lines + ["No training stage is recorded in params.yaml.", ""]
    lines += ["| stage | teacher | student init | data | loss | t schedule |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(f"`{c}`" if i in (1, 2) and c != UNKNOWN else str(c) for i, c in enumerate(row))
              + " |" for row in rows]
    if params.get("instruct") is None:
        lines += ["", "Instruction tuning: no `instruct` stage in params.yaml; the model is the distilled student."]
    return lines + [""]


# -- evaluation and quantized files

def evaluation_section(eval_path):
    lines = ["## Evaluation", ""]
    path = Path(eval_path) if eval_path else None
    if path is None or not path.is_file():
        return lines + [f"No evaluation results: {path or 'no results file given'} not found.", ""]
    results = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(results.get("tasks"), dict):
        return lines + [f"No evaluation results: {path} has no 'tasks'.", ""]
    return lines + [markdown_table(results).rstrip("\n"), ""]


def file_size(n_bytes):
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n_bytes >= size:
            return f"{n_bytes / size:.1f} {unit}"
    return f"{n_bytes} B"


def quantization_rows(paths):
    """(rows, notes): one row per quantization in the export metrics files found."""
    rows, notes = [], []
    for path in map(Path, paths):
        if not path.is_file():
            notes.append(f"{path} not found")
            continue
        metrics = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(metrics.get("quantizations"), dict):
            notes.append(f"{path} has no 'quantizations' table")
            continue
        for name, entry in metrics["quantizations"].items():
            row = (metrics.get("format", "?").upper(), name, entry)
            if row[:2] not in [r[:2] for r in rows]:  # each quantization's file also re-checks the reference
                rows.append(row)
    return rows, notes


def _number(value, spec):
    return "–" if value is None else format(value, spec)


def quantization_section(paths):
    rows, notes = quantization_rows(paths)
    lines = ["## Quantized files", ""]
    if rows:
        lines += ["| format | quantization | size | perplexity | drift vs unquantized | top-1 agreement |",
                  "|---|---|---:|---:|---:|---:|"]
        for fmt, name, entry in rows:
            drift = entry.get("perplexity_drift")
            reference = entry.get("perplexity_reference")
            relative = f" ({100 * drift / reference:+.2f}%)" if drift is not None and reference else ""
            lines.append(f"| {fmt} | {name} | {file_size(entry['size_bytes']) if 'size_bytes' in entry else '–'} "
                         f"| {_number(entry.get('perplexity'), '.3f')} | {_number(drift, '+.3f')}{relative} "
                         f"| {_number(entry.get('top1_agreement'), '.4f')} |")
        lines.append("")
        lines.append("Perplexity on held-out Japanese text; drift against the unquantized model on the same text.")
    else:
        lines.append("No export metrics found.")
    if notes:
        lines += ["", "Missing: " + "; ".join(notes) + "."]
    return lines + [""]


# -- usage and the whole card

def usage_section(settings, formats):
    repo, name = settings["repo_id"], settings["model_name"]
    gguf = [q for fmt, q, _ in formats if fmt == "GGUF"]
    mlc = [(q, entry.get("library") or {}) for fmt, q, entry in formats if fmt == "MLC"]
    lines = ["## Usage", "", "### transformers", "", "```python",
             "from transformers import AutoModelForCausalLM, AutoTokenizer", "",
             f'tokenizer = AutoTokenizer.from_pretrained("{repo}")',
             f'model = AutoModelForCausalLM.from_pretrained("{repo}")',
             'messages = [{"role": "user", "content": "日本で一番高い山は何ですか？"}]',
             "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\",",
             "                                       return_dict=True)",
             "output = model.generate(**inputs, max_new_tokens=128)",
             "print(tokenizer.decode(output[0][inputs[\"input_ids\"].shape[1]:], skip_special_tokens=True))", "```", "",
             "### llama.cpp", "", "```sh",
             f"llama-cli -hf {repo}-GGUF:{gguf[0] if gguf else 'Q4_K_M'} -cnv", "```", ""]
    if not gguf:
        lines += ["(No GGUF export metrics were found for this card.)", ""]
    quant, library = mlc[0] if mlc else ("q4f32_1", {})
    model_url = f"https://huggingface.co/{repo}-{quant}-MLC"
    lines += ["### WebLLM", "", "```js", 'import * as webllm from "@mlc-ai/web-llm";', "",
              "const appConfig = {", "  model_list: [{", f'    model: "{model_url}",', f'    model_id: "{name}-{quant}",',
              f"    model_lib: {library_expression(library, model_url)},", "  }],", "};",
              f'const engine = await webllm.CreateMLCEngine("{name}-{quant}", {{ appConfig }});',
              'const reply = await engine.chat.completions.create({',
              '  messages: [{ role: "user", content: "こんにちは" }],', "});", "```", ""]
    if not mlc:
        lines += ["(No MLC export metrics were found for this card.)", ""]
    return lines


def library_expression(library, model_url):
    """JavaScript for the model library's URL: a stock WebLLM library, or the compiled one beside the weights."""
    if "stock" in library:
        return f'webllm.modelLibURLPrefix + webllm.modelVersion + "/{library["stock"]}"'
    if "file" in library:
        return f'"{model_url}/resolve/main/{library["file"]}"'
    return '"<the model library named in webllm.json>"'


def model_card(params, eval_path=None, export_metrics=()):
    settings = card_settings(params)
    formats, _ = quantization_rows(export_metrics)
    licence = settings["license"]
    description = settings["description"] or (
        "A small Japanese language model distilled from a larger teacher with TAID (Temporally Adaptive "
        "Interpolated Distillation), built with the tsubame pipeline.")
    lines = [front_matter(settings, params, {fmt.lower() for fmt, _, _ in formats}), f"# {settings['model_name']}",
             "", description, ""]
    lines += lineage_section(params)
    lines += evaluation_section(eval_path)
    lines += quantization_section(export_metrics)
    lines += usage_section(settings, formats)
    lines += ["## License", "", f"{licence}." if licence else "No license is set (`model_card.license` in "
              "params.yaml); the teacher's and the base model's licences apply to this model too.", ""]
    return "\n".join(lines)
