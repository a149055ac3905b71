"""The resource planner: does a recipe fit on the GPUs at hand, and how long will it run?

Arithmetic only: model shapes come from configs built on the meta device (no weights), the rest from the
recipe. Memory is per GPU, in bytes, split into named terms so that a plan shows where it goes; time comes
from a stated model FLOPs utilisation (MFU). Every constant below says where it comes from.
"""
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

from taid.models import config_for, is_config_file
from taid.vocab import shared_vocab_size

GIB = 2**30
CONFIGS_DIR = Path(__file__).resolve().parents[1] / "configs" / "models"   # committed model configs
LAYOUTS = ("ddp", "fsdp", "zero3")
PLACEMENTS = ("sharded", "replicated", "separate", "cache")
PRECISIONS = ("bf16", "fp32")
DTYPE_BYTES = {"bfloat16": 2, "float16": 2, "float32": 4}

# Bytes per student parameter held for (weights, gradients, optimizer states), AdamW. Mixed precision
# keeps an fp32 master copy and two fp32 moments, 16 bytes in all (Rajbhandari et al. 2020, ZeRO §3);
# where the master copy lives depends on the engine:
STATE_BYTES = {
    # torch autocast (accelerate DDP): the fp32 parameters are the master copy, gradients are fp32, and
    # autocast keeps a bf16 cast of every weight from forward to backward (the + 2)
    ("ddp", "bf16"): (4 + 2, 4, 8),
    # FSDP2 with MixedPrecisionPolicy(param_dtype=bf16): sharded fp32 parameters and gradients
    ("fsdp", "bf16"): (4, 4, 8),
    # DeepSpeed ZeRO-3 with bf16: bf16 parameters and gradients; fp32 master and moments in the optimizer
    ("zero3", "bf16"): (2, 2, 12),
    ("ddp", "fp32"): (4, 4, 8), ("fsdp", "fp32"): (4, 4, 8), ("zero3", "fp32"): (4, 4, 8),
}
# DDP copies gradients into its communication buckets: a second set (gradient_as_bucket_view=False,
# accelerate's default; see torch.nn.parallel.DistributedDataParallel).
DDP_BUCKET_BYTES = 4
# torch's foreach AdamW allocates sqrt(v) for every parameter during the step (one fp32 tensor each);
# DeepSpeed's fused Adam updates in place.
OPTIMIZER_STEP_BYTES = {"ddp": 4, "fsdp": 4, "zero3": 0}

# Activation bytes one decoder layer keeps for backward, per token:
#     c_h·hidden + c_kv·kv_hidden + c_i·intermediate + c_a·heads + c_0
# counted tensor by tensor as in Korthikanti et al. 2022 ("Reducing Activation Recomputation in Large
# Transformer Models", §4.1), for Hugging Face Qwen2 with SDPA (a fused kernel keeps q, k, v, the output
# and an fp32 log-sum-exp per head, never the s×s scores) and no dropout. tests/test_plan.py checks them
# against the tensors torch's saved-tensor hooks record.
ACTIVATION_COEFFS = {
    # fp32 parameters under bf16 autocast (DDP): the residual stream is fp32. Each RMSNorm keeps its fp32
    # input and output (2 × 8h); q/k/v/gate/up each keep their own bf16 cast of a norm output (5 × 2h);
    # rotated q and the attention output (2 × 2h); k, v (2 × 2h_kv); SwiGLU's gate, up, silu(gate) and the
    # down projection's input (4 × 2i); the log-sum-exp (4 per head); two fp32 rsqrt (2 × 4).
    "fp32 residual": (30, 4, 8, 4, 8),
    # bf16 parameters (FSDP2 param_dtype, ZeRO-3): each RMSNorm keeps an fp32 upcast and a bf16 output
    # (2 × 6h); one shared bf16 input per projection group (2 × 2h); q and the attention output (2 × 2h).
    "bf16 residual": (20, 4, 8, 4, 8),
    # fp32 throughout: as above, with every tensor in 4 bytes.
    "fp32": (32, 8, 16, 4, 8),
}
RESIDUAL_BYTES = {"fp32 residual": 4, "bf16 residual": 2, "fp32": 4}
# [chunk, vocab] fp32 buffers alive at the peak of one chunk's forward and backward in taid.chunked with
# the TAID loss (logits, masked copies, log-softmaxes, the interpolated target, KL terms and their
# gradients): read off torch's memory-profiler timeline on CPU; tests/test_plan.py measures it again.
LOSS_CHUNK_BUFFERS = 12.25
# A teacher's forward under no_grad, one layer at a time: at most three [tokens, intermediate] bf16 MLP
# tensors (gate or silu, up, their product) and eight bytes per hidden unit of norm temporaries, per token
# (an upper bound: 85% of it measured on CPU for 512 tokens, tests/test_plan.py).
TEACHER_WORKING_BYTES = (6, 8)   # (per intermediate, per hidden)


@dataclass(frozen=True)
class ModelShape:
    name: str
    n_params: int
    hidden: int
    kv_hidden: int
    intermediate: int
    heads: int
    layers: int
    output_rows: int
    tied: bool
    largest_unit: int   # parameters of the largest FSDP / ZeRO-3 unit: a decoder layer or the root (embeddings)


def model_shape(name, config):
    """Parameter count and shapes of ``config``'s model, built on the meta device (no memory, no weights)."""
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n_params = sum(p.numel() for p in model.parameters())  # tied weights counted once
    layer = sum(p.numel() for p in model.model.layers[0].parameters())
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    return ModelShape(
        name=name, n_params=n_params, hidden=config.hidden_size,
        kv_hidden=config.num_key_value_heads * head_dim, intermediate=config.intermediate_size,
        heads=config.num_attention_heads, layers=config.num_hidden_layers,
        output_rows=model.get_output_embeddings().weight.shape[0], tied=bool(config.tie_word_embeddings),
        largest_unit=max(layer, n_params - layer * config.num_hidden_layers),
    )


def resolve_config(source, configs_dir=CONFIGS_DIR):
    """The config a model source describes: a config JSON, a local model directory, or a hub id whose
    config is committed as ``configs/models/<name>.json`` (Qwen/Qwen2.5-32B-Instruct →
    qwen2.5-32b-instruct.json). Never downloads."""
    if is_config_file(source):
        return config_for(source)
    if (Path(source) / "config.json").is_file():
        return AutoConfig.from_pretrained(source)
    committed = Path(configs_dir) / f"{str(source).rstrip('/').split('/')[-1].lower()}.json"
    if committed.is_file():
        return config_for(committed)
    raise ValueError(f"no config for model {source!r}: not a config JSON or model directory, and "
                     f"{committed} is not committed; add its config.json there")


@dataclass
class Setup:
    """What the arithmetic needs, unpacked once from the recipe and the command line."""
    gpus: int
    gpu_mem_gib: float
    layout: str = "fsdp"
    placement: str = "sharded"
    teacher_gpus: int = 0          # separate placement: how many of the GPUs hold the teacher
    precision: str = "bf16"
    teacher_dtype: str = "bfloat16"
    batch_size: int = 1            # rows per micro-batch, per process
    grad_accum: int = 1
    seq_len: int = 2048
    steps: int = 1
    checkpointing: bool = True
    loss_chunk: int = 512          # 0: the plain full-logit loss
    cache_k: int = 64              # cache placement: top-k teacher log-probabilities per token
    mfu: float = 0.35
    peak_tflops: float = 989.0
    reserve_gib: float = 4.0       # CUDA context, NCCL buffers, allocator fragmentation
    target_tokens: float = 0.0     # recipe's wanted training tokens (0: none)

    def __post_init__(self):
        checks = [
            (self.layout in LAYOUTS, f"layout must be one of {LAYOUTS}, got {self.layout!r}"),
            (self.placement in PLACEMENTS, f"teacher placement must be one of {PLACEMENTS}, got {self.placement!r}"),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}, got {self.precision!r}"),
            (self.teacher_dtype in DTYPE_BYTES, f"teacher dtype must be one of {sorted(DTYPE_BYTES)}, "
                                                f"got {self.teacher_dtype!r}"),
            (self.gpus >= 1 and self.gpu_mem_gib > 0, f"need at least one GPU with memory, got {self.gpus} GPUs "
                                                      f"of {self.gpu_mem_gib} GiB"),
            (0 < self.mfu <= 1, f"mfu must be in (0, 1], got {self.mfu}"),
            (not (self.layout == "ddp" and self.placement == "sharded"),
             "layout ddp cannot shard the teacher: use teacher placement replicated, separate or cache, "
             "or layout fsdp / zero3"),
            (self.placement != "separate" or 1 <= self.teacher_gpus < self.gpus,
             f"separate placement needs 1 <= teacher_gpus < gpus, got {self.teacher_gpus} of {self.gpus}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def student_gpus(self):
        return self.gpus - self.teacher_gpus if self.placement == "separate" else self.gpus

    @property
    def micro_tokens(self):
        return self.batch_size * self.seq_len

    @property
    def activation_kind(self):
        if self.precision == "fp32":
            return "fp32"
        return "fp32 residual" if self.layout == "ddp" else "bf16 residual"


# -- memory, per GPU, in bytes

def student_state_bytes(shape, setup):
    """Weights, gradients and optimizer states of the student, and the units FSDP / ZeRO-3 gather."""
    weights, grads, optimizer = STATE_BYTES[(setup.layout, setup.precision)]
    shards = 1 if setup.layout == "ddp" else setup.student_gpus
    terms = {
        "student weights": shape.n_params * weights / shards,
        "student gradients": shape.n_params * grads / shards,
        "optimizer states": shape.n_params * optimizer / shards,
    }
    if setup.layout == "ddp" and setup.student_gpus > 1:
        terms["student gradients"] += shape.n_params * DDP_BUCKET_BYTES
    if setup.layout != "ddp":  # the unit computed and the one prefetched, plus one unit's unsharded gradient
        compute = 2 if setup.precision == "bf16" else 4
        terms["gathered student units"] = shape.largest_unit * (2 * compute + grads)
    return terms


def activation_bytes(shape, tokens, kind, checkpointing):
    """What the student's forward keeps for backward over ``tokens`` tokens (see ACTIVATION_COEFFS).

    With checkpointing a layer keeps only its input, and backward recomputes one layer at a time."""
    c_h, c_kv, c_i, c_a, c_0 = ACTIVATION_COEFFS[kind]
    r = RESIDUAL_BYTES[kind]
    per_layer = tokens * (c_h * shape.hidden + c_kv * shape.kv_hidden + c_i * shape.intermediate
                          + c_a * shape.heads + c_0)
    # outside the layers (final norm, embedding output, rotary tables): measured 8–13 bytes per hidden unit
    # per token on CPU; bounded by two norms' worth
    outside = tokens * 2 * (4 + r) * shape.hidden
    if checkpointing:
        return shape.layers * tokens * r * shape.hidden + per_layer + outside
    return shape.layers * per_layer + outside


def loss_bytes(student, teacher, tokens, setup):
    """The chunked loss: [chunk, vocab] temporaries, the LM head's fp32 gradient accumulator, and the
    final hidden states it takes (student's and their gradient, teacher's or its cached top-k)."""
    chunk = min(setup.loss_chunk or tokens, tokens)
    r = RESIDUAL_BYTES[setup.activation_kind]
    total = (LOSS_CHUNK_BUFFERS * chunk * student.output_rows * 4 + student.output_rows * student.hidden * 4
             + 2 * tokens * student.hidden * r)
    if teacher is None:   # cross-entropy only (sft)
        return total
    if setup.placement == "cache":
        return total + tokens * setup.cache_k * (2 + 4)   # fp16 log-probabilities and int32 ids
    return total + tokens * teacher.hidden * DTYPE_BYTES[setup.teacher_dtype]


def teacher_forward_bytes(teacher, tokens, dtype):
    """A teacher forward under no_grad: one layer's working set plus every layer's hidden states, which
    ``output_hidden_states=True`` (taid.objective.final_hidden) keeps until the forward returns."""
    per_i, per_h = TEACHER_WORKING_BYTES
    hidden_states = (teacher.layers + 1) * tokens * teacher.hidden * DTYPE_BYTES[dtype]
    return tokens * (per_i * teacher.intermediate + per_h * teacher.hidden) + hidden_states


def teacher_weight_bytes(teacher, setup):
    """The teacher's weights on a student GPU, by placement."""
    size = DTYPE_BYTES[setup.teacher_dtype]
    if setup.placement == "sharded":
        return {"teacher weights": teacher.n_params * size / setup.gpus,
                "gathered teacher units": 2 * teacher.largest_unit * size}
    if setup.placement == "replicated":
        return {"teacher weights": teacher.n_params * size}
    if setup.placement == "separate":  # the loss needs the teacher's LM head next to the student
        return {"teacher LM head": teacher.output_rows * teacher.hidden * size}
    return {}


def student_gpu_memory(student, teacher, setup):
    """Named terms on one student GPU: what stays for the whole run, then the larger of its two peaks."""
    terms = student_state_bytes(student, setup)
    if teacher is not None:
        terms.update(teacher_weight_bytes(teacher, setup))
    terms.update(peak_phase(student, teacher, setup))
    terms["reserved"] = setup.reserve_gib * GIB
    return terms


def transient_bytes(student, teacher, setup):
    """What comes and goes within a step: the loss, the teacher's forward, the optimizer's temporaries."""
    teacher_forward = 0.0
    if teacher is not None and setup.placement in ("sharded", "replicated"):
        teacher_forward = teacher_forward_bytes(teacher, setup.micro_tokens, setup.teacher_dtype)
    shards = 1 if setup.layout == "ddp" else setup.student_gpus
    return {"chunked loss": loss_bytes(student, teacher, setup.micro_tokens, setup),
            "teacher forward": teacher_forward,
            "optimizer step temporaries": student.n_params * OPTIMIZER_STEP_BYTES[setup.layout] / shards}


def peak_phase(student, teacher, setup):
    """Memory peaks at the end of the forward, when all activations are alive and the teacher's forward
    or the loss runs (one after the other), or in the optimizer step, after they are freed: the terms of
    the larger."""
    transient = transient_bytes(student, teacher, setup)
    larger = max(("chunked loss", "teacher forward"), key=transient.get)
    forward = {"activations": activation_bytes(student, setup.micro_tokens, setup.activation_kind, setup.checkpointing),
               larger: transient[larger]}
    step = {"optimizer step temporaries": transient["optimizer step temporaries"]}
    return forward if sum(forward.values()) >= sum(step.values()) else step


def teacher_gpu_memory(teacher, setup):
    """Separate placement: the teacher split layer-wise over its own GPUs, serving one micro-batch at a time."""
    return {"teacher weights": teacher.n_params * DTYPE_BYTES[setup.teacher_dtype] / setup.teacher_gpus,
            "teacher forward": teacher_forward_bytes(teacher, setup.micro_tokens, setup.teacher_dtype),
            "reserved": setup.reserve_gib * GIB}


# -- time

def flops_per_token(student, teacher, setup):
    """6·N for the student's forward and backward, 2·N for the teacher's forward (Kaplan et al. 2020);
    recomputation under checkpointing is not counted (the MFU convention, Chowdhery et al. 2022)."""
    teacher_flops = 2 * teacher.n_params if teacher is not None and setup.placement != "cache" else 0
    return 6 * student.n_params, teacher_flops


def tokens_per_second(student, teacher, setup):
    rate = setup.mfu * setup.peak_tflops * 1e12   # achieved FLOP/s per GPU
    student_flops, teacher_flops = flops_per_token(student, teacher, setup)
    if setup.placement == "separate" and teacher_flops:  # the two sides run at once; the slower sets the pace
        return min(setup.student_gpus * rate / student_flops, setup.teacher_gpus * rate / teacher_flops)
    return setup.gpus * rate / (student_flops + teacher_flops)


# -- the plan

@dataclass
class Plan:
    student: ModelShape
    teacher: ModelShape | None
    n_shared: int | None
    setup: Setup
    memory: dict = field(default_factory=dict)          # bytes on a student GPU, by term
    teacher_memory: dict = field(default_factory=dict)  # bytes on a teacher GPU (separate placement)
    activations: dict = field(default_factory=dict)     # with / without checkpointing
    transients: dict = field(default_factory=dict)      # each transient term, counted or not (transient_bytes)
    tokens_per_step: int = 0
    tokens_per_second: float = 0.0
    cache_pass_seconds: float = 0.0                      # cache placement: the teacher's one pass over the data

    @property
    def total_tokens(self):
        return self.tokens_per_step * self.setup.steps

    @property
    def seconds(self):
        return self.total_tokens / self.tokens_per_second

    def problems(self):
        """Why the plan does not fit, one line per GPU kind over its memory; empty when it fits."""
        found = []
        for kind, terms in (("student", self.memory), ("teacher", self.teacher_memory)):
            need, have = sum(terms.values()), self.setup.gpu_mem_gib * GIB
            if terms and need > have:
                largest = sorted(terms.items(), key=lambda kv: -kv[1])[:3]
                found.append(f"a {kind} GPU needs {need / GIB:.1f} GiB of {have / GIB:.1f} GiB "
                             f"({(need - have) / GIB:.1f} GiB over); largest: "
                             + ", ".join(f"{name} {size / GIB:.1f} GiB" for name, size in largest))
        return found


def make_plan(student, teacher, setup, tokenizer_size=None):
    """Memory per GPU and time for training ``student`` (from ``teacher``, or alone when None)."""
    n_shared = None
    if teacher is not None and tokenizer_size is not None:
        # shared_vocab_size only needs len(tokenizer): the ids every output row set must cover
        n_shared = shared_vocab_size(range(tokenizer_size), teacher.output_rows, student.output_rows)
    plan = Plan(student, teacher, n_shared, setup)
    plan.memory = student_gpu_memory(student, teacher, setup)
    if setup.placement == "separate":
        plan.teacher_memory = teacher_gpu_memory(teacher, setup)
    plan.activations = {ckpt: activation_bytes(student, setup.micro_tokens, setup.activation_kind, ckpt)
                        for ckpt in (True, False)}
    plan.transients = transient_bytes(student, teacher, setup)
    plan.tokens_per_step = setup.batch_size * setup.grad_accum * setup.student_gpus * setup.seq_len
    plan.tokens_per_second = tokens_per_second(student, teacher, setup)
    if teacher is not None and setup.placement == "cache":
        rate = setup.gpus * setup.mfu * setup.peak_tflops * 1e12
        plan.cache_pass_seconds = plan.total_tokens * 2 * teacher.n_params / rate
    return plan


def steps_for(tokens, plan):
    return math.ceil(tokens / plan.tokens_per_step)
