"""The planner: parameter counts against published sizes, memory arithmetic against hand calculations
and against what torch records on CPU, refusals; the recipes and the accelerate configs load."""
import re
import subprocess
import sys
from argparse import Namespace
from contextlib import nullcontext
from pathlib import Path

import pytest
import torch
import yaml
from accelerate.commands.config.config_args import load_config_from_file
from accelerate.commands.launch import _validate_launch_command, launch_command_parser
from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env
from torch.profiler import ProfilerActivity, profile
from torch.profiler._memory_profiler import Action
from transformers import Qwen2Config, Qwen2ForCausalLM

from stages import plan as plan_stage
from stages.common import StageError
from taid.chunked import LossSpec, chunked_loss
from taid.losses import taid_loss
from taid.models import final_hidden
from taid.plan import (
    GIB, LOSS_CHUNK_BUFFERS, ModelShape, Setup, activation_bytes, make_plan, model_shape, resolve_config,
    teacher_forward_bytes,
)
from taid.teachers import HeadLogits
from taid.trainer import TrainConfig
from taid.vocab import TokenizerMismatchError

REPO = Path(__file__).resolve().parents[1]
RECIPES = sorted((REPO / "configs/recipes").glob("*.yaml"))

# Qwen2.5 technical report and model cards: parameters, non-embedding parameters, output rows, tied
PUBLISHED = {
    "Qwen/Qwen2.5-0.5B-Instruct": (0.49e9, 0.36e9, 151_936, True),
    "Qwen/Qwen2.5-1.5B-Instruct": (1.54e9, 1.31e9, 151_936, True),
    "Qwen/Qwen2.5-7B-Instruct": (7.62e9, 6.53e9, 152_064, False),
    "Qwen/Qwen2.5-32B-Instruct": (32.8e9, 31.0e9, 152_064, False),
}


@pytest.mark.parametrize("source", sorted(PUBLISHED))
def test_parameter_counts_match_the_published_sizes(source):
    total, non_embedding, rows, tied = PUBLISHED[source]
    shape = model_shape(source, resolve_config(source, REPO / "configs/models"))
    embeddings = shape.output_rows * shape.hidden * (1 if shape.tied else 2)
    assert shape.n_params == pytest.approx(total, rel=0.01)
    assert shape.n_params - embeddings == pytest.approx(non_embedding, rel=0.01)
    assert (shape.output_rows, shape.tied) == (rows, tied)


def test_a_hub_id_without_a_committed_config_is_refused(tmp_path):
    with pytest.raises(ValueError, match="qwen9-1b.json is not committed"):
        resolve_config("Someone/Qwen9-1B", tmp_path)


# -- memory arithmetic by hand, on shapes small enough to add up on paper

STUDENT = ModelShape("student", n_params=1000, hidden=8, kv_hidden=4, intermediate=16, heads=2, layers=3,
                     output_rows=50, tied=True, largest_unit=400)
TEACHER = ModelShape("teacher", n_params=4000, hidden=16, kv_hidden=8, intermediate=32, heads=4, layers=4,
                     output_rows=60, tied=False, largest_unit=900)
TOKENS = 2 * 10   # micro-batch rows × sequence length


def small_setup(**changes):
    settings = dict(gpus=4, gpu_mem_gib=1.0, layout="fsdp", placement="sharded", batch_size=2, seq_len=10,
                    grad_accum=3, steps=100, checkpointing=True, loss_chunk=5, mfu=0.5, peak_tflops=100.0,
                    reserve_gib=0.0)
    return Setup(**{**settings, **changes})


def test_fsdp_with_a_sharded_teacher_by_hand():
    plan = make_plan(STUDENT, TEACHER, small_setup())
    assert plan.memory == pytest.approx({
        "student weights": 1000 * 4 / 4,              # fp32 shards over 4 GPUs
        "student gradients": 1000 * 4 / 4,
        "optimizer states": 1000 * 8 / 4,             # two fp32 moments
        "gathered student units": 400 * (2 + 2 + 4),  # two bf16 units in flight, one unit's fp32 gradient
        "teacher weights": 4000 * 2 / 4,              # bf16 shards
        "gathered teacher units": 2 * 900 * 2,
        # checkpointed, bf16 residual stream: 3 layer inputs, one layer recomputed, the final norm's share
        "activations": 3 * 20 * 2 * 8 + 20 * (20 * 8 + 4 * 4 + 8 * 16 + 4 * 2 + 8) + 20 * 2 * 6 * 8,
        # 12.25 fp32 [5, 50] buffers, the head's fp32 gradient, student hidden and its gradient, teacher hidden;
        # more than the teacher's forward: 20 × (6 × 32 + 8 × 16) + 5 hidden states × 20 × 16 × 2 = 9,600
        "chunked loss": 12.25 * 5 * 50 * 4 + 50 * 8 * 4 + 2 * 20 * 8 * 2 + 20 * 16 * 2,
        "reserved": 0.0,
    })
    assert sum(plan.memory.values()) == pytest.approx(37_210)
    assert plan.transients == pytest.approx({"chunked loss": 15_130, "teacher forward": 9_600,
                                             "optimizer step temporaries": 1000 * 4 / 4})


def test_ddp_with_a_replicated_teacher_by_hand():
    plan = make_plan(STUDENT, TEACHER, small_setup(layout="ddp", placement="replicated", loss_chunk=0))
    per_layer = 20 * (30 * 8 + 4 * 4 + 8 * 16 + 4 * 2 + 8)   # fp32 residual under autocast: 8,000
    final_norm = 20 * 2 * 8 * 8
    assert plan.memory == pytest.approx({
        "student weights": 1000 * (4 + 2),    # fp32 parameters and autocast's bf16 copies
        "student gradients": 1000 * (4 + 4),  # fp32 gradients and DDP's buckets
        "optimizer states": 1000 * 8,
        "teacher weights": 4000 * 2,
        "activations": 3 * 20 * 4 * 8 + per_layer + final_norm,
        "chunked loss": 12.25 * 20 * 50 * 4 + 50 * 8 * 4 + 2 * 20 * 8 * 4 + 20 * 16 * 2,   # chunk 0: all 20 tokens
        "reserved": 0.0,
    })
    assert plan.activations[False] == 3 * per_layer + final_norm


def test_the_optimizer_step_is_the_peak_when_activations_are_small():
    big = ModelShape("big", n_params=10**6, hidden=8, kv_hidden=4, intermediate=16, heads=2, layers=3,
                     output_rows=50, tied=True, largest_unit=10**5)
    plan = make_plan(big, None, small_setup(layout="ddp", placement="replicated", batch_size=1, seq_len=1))
    assert plan.memory["optimizer step temporaries"] == 10**6 * 4   # foreach AdamW's sqrt(v), fp32
    assert "activations" not in plan.memory


def test_separate_placement_by_hand():
    plan = make_plan(STUDENT, TEACHER, small_setup(placement="separate", teacher_gpus=1))
    assert plan.memory["student weights"] == pytest.approx(1000 * 4 / 3)   # 3 student GPUs
    assert plan.memory["teacher LM head"] == 60 * 16 * 2
    assert plan.teacher_memory == pytest.approx({
        "teacher weights": 4000 * 2, "teacher forward": 20 * (6 * 32 + 8 * 16) + 5 * 20 * 16 * 2, "reserved": 0.0})
    rate = 0.5 * 100e12
    assert plan.tokens_per_second == pytest.approx(min(3 * rate / 6000, 1 * rate / 8000))


def test_throughput_and_wall_clock_by_hand():
    rate = 0.5 * 100e12   # achieved FLOP/s per GPU
    plan = make_plan(STUDENT, TEACHER, small_setup())
    assert plan.tokens_per_second == pytest.approx(4 * rate / (6 * 1000 + 2 * 4000))
    assert plan.tokens_per_step == 2 * 3 * 4 * 10
    assert plan.seconds == pytest.approx(100 * 240 / plan.tokens_per_second)
    cached = make_plan(STUDENT, TEACHER, small_setup(placement="cache"))
    assert cached.tokens_per_second == pytest.approx(4 * rate / (6 * 1000))
    assert cached.cache_pass_seconds == pytest.approx(100 * 240 * 2 * 4000 / (4 * rate))


def test_alignment_is_over_the_tokenizer_ids():
    plan = make_plan(STUDENT, TEACHER, small_setup(), tokenizer_size=45)
    assert plan.n_shared == 45
    with pytest.raises(TokenizerMismatchError, match="student has 50 output rows"):
        make_plan(STUDENT, TEACHER, small_setup(), tokenizer_size=55)


def test_a_plan_fits_up_to_the_last_byte_and_names_what_is_over():
    assert make_plan(STUDENT, TEACHER, small_setup(gpu_mem_gib=37_210 / GIB)).problems() == []
    [problem] = make_plan(STUDENT, TEACHER, small_setup(gpu_mem_gib=37_209 / GIB)).problems()
    assert problem.startswith("a student GPU needs") and "over); largest: chunked loss" in problem


@pytest.mark.parametrize("changes, message", [
    (dict(layout="ddp", placement="sharded"), "ddp cannot shard the teacher"),
    (dict(placement="separate", teacher_gpus=4), "1 <= teacher_gpus < gpus"),
    (dict(layout="tp"), "layout must be one of"),
    (dict(mfu=1.5), "mfu must be in"),
])
def test_impossible_setups_are_refused(changes, message):
    with pytest.raises(ValueError, match=message):
        small_setup(**changes)


# -- the constants against what torch records on CPU

def tiny_qwen2(layers, dtype=torch.float32, intermediate=88):
    config = Qwen2Config(vocab_size=36, hidden_size=48, intermediate_size=intermediate, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         tie_word_embeddings=True, attn_implementation="sdpa")
    torch.manual_seed(0)
    return Qwen2ForCausalLM(config).to(dtype), config


def batch(rows=2, seq_len=20):
    return {"input_ids": torch.randint(0, 36, (rows, seq_len)), "attention_mask": torch.ones(rows, seq_len, dtype=torch.long)}


def saved_activation_bytes(layers, kind, checkpointing):
    """Bytes of the tensors autograd keeps for backward, each storage once, leaving out parameters and
    autocast's weight casts (shaped like a parameter or its transpose; no activation here is)."""
    model, _ = tiny_qwen2(layers, torch.bfloat16 if kind == "bf16 residual" else torch.float32)
    if checkpointing:  # as taid.trainer does: the method's current name, else the older one
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    model.train()
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    shapes = {tuple(p.shape) for p in model.parameters()} | {tuple(p.shape)[::-1] for p in model.parameters()}
    kept = {}

    def pack(tensor):
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in params and tuple(tensor.shape) not in shapes:
            kept[storage.data_ptr()] = storage.nbytes()
        return tensor

    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if kind == "fp32 residual" else nullcontext()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), autocast:
        final_hidden(model, batch())
    return sum(kept.values())


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("kind", ["fp32 residual", "bf16 residual", "fp32"])
def test_activation_bytes_per_layer_equal_what_autograd_keeps(kind, checkpointing):
    measured = saved_activation_bytes(2, kind, checkpointing) - saved_activation_bytes(1, kind, checkpointing)
    shapes = [model_shape("tiny", tiny_qwen2(layers)[1]) for layers in (1, 2)]
    predicted = activation_bytes(shapes[1], 40, kind, checkpointing) - activation_bytes(shapes[0], 40, kind, checkpointing)
    assert measured == predicted


def peak_bytes(run):
    """Peak of the bytes allocated while ``run`` runs (tensors made before it are left out), from the
    memory profiler's timeline of tensor creations and destructions."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        run()
    live = peak = 0
    for _, action, _, size in prof._memory_profile().timeline:
        live += size if action == Action.CREATE else -size if action == Action.DESTROY else 0
        peak = max(peak, live)
    return peak


def test_loss_chunk_buffers_match_the_profiled_peak():
    n, hidden, vocab, chunk = 48, 24, 3000, 16
    g = torch.Generator().manual_seed(0)
    student_hidden = torch.randn(n, hidden, generator=g).requires_grad_()
    head = (0.02 * torch.randn(vocab, hidden, generator=g)).requires_grad_()
    teacher_hidden, teacher_head = torch.randn(n, hidden, generator=g), 0.02 * torch.randn(vocab, hidden, generator=g)
    labels, mask = torch.randint(0, vocab, (n,), generator=g), torch.ones(n, dtype=torch.bool)

    def run():
        teacher = HeadLogits(teacher_hidden, teacher_head)
        chunked_loss(LossSpec(taid_loss, {"t": 0.5}), student_hidden, head, teacher, labels, mask, chunk).backward()

    gradients = (vocab + n) * hidden * 4   # the head's and the hidden states' fp32 gradients
    buffers = (peak_bytes(run) - gradients) / (chunk * vocab * 4)
    assert buffers == pytest.approx(LOSS_CHUNK_BUFFERS, abs=0.75)


def teacher_forward_peak(layers, rows=8, seq_len=64):
    model, config = tiny_qwen2(layers, torch.bfloat16)
    model.eval()
    inputs = batch(rows, seq_len)

    def run():
        with torch.no_grad():
            final_hidden(model, inputs)

    return peak_bytes(run), teacher_forward_bytes(model_shape("tiny", config), rows * seq_len, "bfloat16")


def test_teacher_forward_keeps_every_hidden_state_and_stays_under_its_bound():
    shallow, shallow_bound = teacher_forward_peak(1)
    deeper, deeper_bound = teacher_forward_peak(3)
    assert deeper - shallow == deeper_bound - shallow_bound == 2 * 512 * 48 * 2   # two more bf16 hidden states
    assert 0.6 * shallow_bound <= shallow <= shallow_bound


# -- the command line and the recipes

def plan_args(recipe, **changes):
    args = dict(recipe=str(recipe), params=str(REPO / "params.yaml"), stage="distill", gpus=None, gpu_mem=None,
                layout=None, placement=None, teacher_gpus=None, mfu=None)
    return Namespace(**{**args, **changes})


def repo_params():
    return yaml.safe_load((REPO / "params.yaml").read_text())


def test_the_plan_command_prints_the_plan():
    recipe = "configs/recipes/tinyswallow-1.5b.yaml"
    result = subprocess.run([sys.executable, "-m", "stages.plan", "--recipe", recipe, "--gpus", "8", "--gpu-mem", "80"],
                            cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    for text in ("1.544B parameters", "32.764B parameters", "151,665 ids", "teacher weights", "fits", "tokens/s"):
        assert text in result.stdout


def test_a_recipe_that_cannot_fit_is_refused_with_the_excess():
    result = subprocess.run([sys.executable, "-m", "stages.plan", "--recipe", "configs/recipes/tinyswallow-1.5b.yaml",
                             "--gpus", "1", "--gpu-mem", "24"], cwd=REPO, capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    need, have, over = map(float, re.search(r"needs ([\d.]+) GiB of ([\d.]+) GiB \(([\d.]+) GiB over\)", result.stderr).groups())
    assert have == 24.0 and over == pytest.approx(need - have, abs=0.11)
    assert need > 32_763_876_352 * 2 / GIB   # the bf16 teacher alone is 61.0 GiB
    assert "teacher weights 61.0 GiB" in result.stderr and "DOES NOT FIT" in result.stdout


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.name)
def test_each_recipe_fits_its_own_plan(recipe, capsys):
    plan_stage.run(plan_args(recipe), repo_params())
    assert "DOES NOT FIT" not in capsys.readouterr().out


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda path: path.name)
def test_recipes_follow_the_official_taid_settings_and_the_trainer_schema(recipe):
    settings = yaml.safe_load(recipe.read_text())
    for stage in ("distill", "instruct"):
        TrainConfig.from_params(settings[stage]["train"])   # unknown keys raise
        assert settings[stage]["taid"] == {"t_start": 0.4, "t_end": 1.0, "alpha": 5e-4, "beta": 0.99, "adaptive": True}
    train = settings["distill"]["train"]
    assert (train["lr"], train["grad_clip"], train["precision"], settings["distill"]["ce_weight"]) == (1e-4, 1.0, "bf16", 0.0)
    assert set(settings["plan"]) <= set(plan_stage.PLAN_DEFAULTS)


@pytest.mark.parametrize("text, message", [
    ("plan: {gpus: 8\n", r"bad.yaml:101:1: not valid YAML: expected ',' or '}'"),
    ("plan: {gpuz: 8}\n", "unknown plan keys \\['gpuz'\\]"),
    ("plan: {tokens: 5.0e9}\n", "plan.tokens must be a number"),
    ("plan: {teacher_placement: cache}\n", "teacher_placement is cache but distill.teacher.mode is live"),
    ("plan: {layout: ddp, teacher_placement: sharded}\n", "ddp cannot shard the teacher"),
    ("plan: {tokenizer_size: 200000}\n", "has 152064 output rows but the tokenizer has 200000 ids"),
])
def test_bad_recipes_are_refused_naming_the_file(tmp_path, text, message):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text((REPO / "configs/recipes/tinyswallow-1.5b.yaml").read_text().split("\nplan:")[0] + "\n" + text)
    with pytest.raises(StageError, match=message) as error:
        plan_stage.run(plan_args(recipe), repo_params())
    assert "bad.yaml" in str(error.value)


@pytest.mark.parametrize("distill, message", [
    ({"teacher": {"source": "Qwen/Qwen2.5-32B-Instruct"}}, "distill.student is not set"),
    ({"student": "Qwen/Qwen2.5-1.5B-Instruct", "train": {"batch_size": 2}}, "distill.train.*'steps'"),
    ({"student": "Someone/Unknown-1B", "train": {"steps": 1}}, "unknown-1b.json is not committed"),
])
def test_a_recipe_missing_what_the_plan_needs_is_refused(tmp_path, distill, message):
    recipe = tmp_path / "thin.yaml"
    recipe.write_text(yaml.safe_dump({"distill": distill, "plan": {"layout": "fsdp"}}))
    with pytest.raises(StageError, match=message):
        plan_stage.run(plan_args(recipe), {})   # nothing from params.yaml to fill the gaps


# -- accelerate configs, read by accelerate's own classes

def launch_args(config_file):
    args = launch_command_parser().parse_args(["--config_file", str(config_file), "-m", "stages.distill"])
    return _validate_launch_command(args)


@pytest.mark.parametrize("name, distributed_type, processes", [
    ("single-gpu", "NO", 1), ("ddp", "MULTI_GPU", 8), ("fsdp", "FSDP", 8), ("zero3", "DEEPSPEED", 8),
    ("multi-node", "FSDP", 16),
])
def test_accelerate_configs_load_with_accelerates_classes(name, distributed_type, processes):
    config = load_config_from_file(str(REPO / f"configs/accelerate/{name}.yaml"))
    assert (config.distributed_type.value, config.num_processes, config.mixed_precision) == (distributed_type, processes, "bf16")
    args, _, _ = launch_args(REPO / f"configs/accelerate/{name}.yaml")
    nested = [k if k.startswith("fsdp") else f"fsdp_{k}" for k in config.fsdp_config] + list(config.deepspeed_config)
    assert all(hasattr(args, key) for key in nested), "a key accelerate launch does not know"


@pytest.mark.parametrize("name", ["fsdp", "multi-node"])
def test_fsdp_configs_make_a_full_shard_fsdp2_plugin(name, monkeypatch):
    args, _, _ = launch_args(REPO / f"configs/accelerate/{name}.yaml")
    for key, value in prepare_multi_gpu_env(args).items():
        monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert (plugin.fsdp_version, plugin.reshard_after_forward, plugin.transformer_cls_names_to_wrap) == \
        (2, True, ["Qwen2DecoderLayer"])


def test_zero3_config_makes_a_stage_3_plugin_matching_the_recipe(monkeypatch):
    args, defaults, _ = launch_args(REPO / "configs/accelerate/zero3.yaml")
    args.deepspeed_fields_from_accelerate_config = list(defaults.deepspeed_config)   # as accelerate launch does
    for key, value in prepare_deepspeed_cmd_env(args)[1].items():
        monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()
    train = yaml.safe_load((REPO / "configs/recipes/tinyswallow-1.5b.yaml").read_text())["distill"]["train"]
    assert plugin.zero_stage == 3
    assert (plugin.gradient_accumulation_steps, plugin.gradient_clipping) == (train["grad_accum"], train["grad_clip"])
