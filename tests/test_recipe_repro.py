"""The real-recipe code path end to end: `dvc repro` with `recipe:` naming a recipe built on
configs/recipes/tinyswallow-1.5b.yaml, whose hub ids point at local directories holding small Qwen2.5-shaped
models (a byte-level BPE tokenizer with Qwen's specials; the teacher with more output rows than the
student, as 32B has 152,064 and 1.5B 151,936 over 151,665 tokens), with only sizes and steps overridden:
bf16, gradient checkpointing, accumulation, checkpoints and resume stay as the recipe sets them."""
import json

import pytest
import yaml
from gguf import GGUFReader
from safetensors import safe_open

from tests.test_dvc import copy_project, dvc
from tests.test_export_gguf_support import bpe_tokenizer_dir, model_dir
from tests.test_stages import REPO

TEACHER_EXTRA, STUDENT_EXTRA = 128, 32   # output rows beyond the tokenizer: 32B has 399, 1.5B 271
SMALL_TRAIN = {"steps": 4, "batch_size": 2, "grad_accum": 2, "warmup_steps": 1, "eval_every": 2, "eval_batches": 4,
               "save_every": 2, "loss_chunk_size": 64}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """Local directories standing in for Qwen/Qwen2.5-32B-Instruct and Qwen/Qwen2.5-1.5B-Instruct."""
    root = tmp_path_factory.mktemp("hub")
    tokenizer_dir = bpe_tokenizer_dir()
    teacher, _, tokenizer = model_dir(root / "teacher", tokenizer_dir, hidden=64, layers=2, extra_rows=TEACHER_EXTRA,
                                      tie=False, seed=1)
    student, _, _ = model_dir(root / "student", tokenizer_dir, hidden=32, intermediate=64, layers=2,
                              extra_rows=STUDENT_EXTRA, tie=True, seed=2)
    return {"teacher": teacher, "student": student, "tokens": len(tokenizer)}


def local_recipe(hub):
    """The TinySwallow recipe with its hub ids and data placeholders pointed at what is here, made small."""
    defaults = yaml.safe_load((REPO / "params.yaml").read_text())
    teacher = str(hub["teacher"])
    return {
        "base": "tinyswallow-1.5b.yaml",
        "tokenizer": {"source": teacher},
        "teacher": {"model": teacher},
        "corpus": {"workers": 1, "tasks": 2, "sources": defaults["corpus"]["sources"]},
        "prepare": {"seq_len": 128},
        "chat": {"seq_len": 256, "sources": defaults["chat"]["sources"]},
        "distill": {"student": str(hub["student"]), "teacher": {"source": teacher}, "train": SMALL_TRAIN},
        "instruct": {"teacher": {"source": teacher}, "train": SMALL_TRAIN},
        "evaluate": {"limit": 4},
    }


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory, hub):
    project = copy_project(tmp_path_factory.mktemp("recipe-project"))
    (project / "configs/recipes/local.yaml").write_text(yaml.safe_dump(local_recipe(hub), allow_unicode=True))
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["recipe"] = "configs/recipes/local.yaml"
    (project / "params.yaml").write_text(yaml.safe_dump(params, allow_unicode=True, sort_keys=False))
    return project, dvc(project, "repro")


def test_the_recipe_reaches_every_stage(reproduced, hub):
    project, log = reproduced
    assert "recipe: local.yaml over tinyswallow-1.5b.yaml sets" in log
    resolved = yaml.safe_load((project / "params.resolved.yaml").read_text())
    train = resolved["distill"]["train"]
    assert (train["precision"], train["gradient_checkpointing"], train["lr"], train["resume"]) == ("bf16", True, 1e-4, True)
    assert resolved["distill"]["teacher"]["dtype"] == "bfloat16" and resolved["distill"]["student"] == str(hub["student"])
    for stage in ("tokenizer", "prepare", "prepare_chat", "teacher", "teacher_chat", "teacher_cache@distill",
                  "distill", "instruct", "evaluate", "export_gguf_f16", "export_gguf@q4_k_m", "export_mlc@q4f16_1",
                  "model_card"):
        assert f"Running stage '{stage}'" in log


def test_the_hub_teacher_is_recorded_not_copied_and_the_student_keeps_its_shape(reproduced, hub):
    project, _ = reproduced
    record = json.loads((project / "models/teacher/teacher.json").read_text())
    assert record["source"] == str(hub["teacher"]) and record["output_size"] == hub["tokens"] + TEACHER_EXTRA
    assert sorted(p.name for p in (project / "models/teacher").iterdir()) == ["teacher.json"]
    config = json.loads((project / "models/instruct/config.json").read_text())
    assert config["vocab_size"] == hub["tokens"] + STUDENT_EXTRA and config["tie_word_embeddings"]
    with safe_open(project / "models/student/model.safetensors", "pt") as f:
        assert f.get_tensor("model.embed_tokens.weight").shape == (hub["tokens"] + STUDENT_EXTRA, 32)


def test_both_training_stages_distil_from_the_live_teacher_over_the_shared_ids(reproduced, hub):
    project, log = reproduced
    for stage in ("distill", "instruct"):
        metrics = json.loads((project / f"metrics/{stage}.json").read_text())
        assert metrics["steps"] == 4 and metrics["teacher_mode"] == "live" and metrics["loss"] == "taid"
        assert metrics["val_kl"] < metrics["val_kl_initial"]
        assert metrics["t_final"] == pytest.approx(1.0)  # t's linear floor reaches t_end at the last step
    assert (project / "checkpoints/distill/step_00000004/trainer_state.json").is_file()  # save_every 2, keep 2
    assert f"to a {hub['tokens'] + STUDENT_EXTRA}-output student over {hub['tokens']} shared ids" in log


def test_the_exports_load_in_their_runtimes(reproduced):
    project, _ = reproduced
    f16 = json.loads((project / "metrics/export_gguf/f16.json").read_text())["files"]["f16"]
    assert f16["tokenizer"]["mismatches"] == 0 and f16["top1_agreement"] >= 0.99
    reader = GGUFReader(project / "models/export/gguf/f16/tsubame-tiny-f16.gguf")
    text = {key: bytes(reader.fields[key].parts[-1]).decode() for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre")}
    assert text == {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "qwen2"}   # Qwen's byte-level BPE
    for quant in ("q8_0", "q5_k_m", "q4_k_m"):
        assert (project / f"models/export/gguf/{quant}/tsubame-tiny-{quant}.gguf").stat().st_size > 0
    for quant in ("q4f16_1", "q4f32_1"):
        mlc = json.loads((project / f"metrics/export_mlc/{quant}.json").read_text())
        assert mlc["quantizations"][quant]["top1_agreement"] >= 0.85
