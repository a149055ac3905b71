"""Planner: will a recipe fit on the GPUs at hand, and how long will it run? (no stage of the pipeline)

    python -m stages.plan --recipe configs/recipes/tinyswallow-1.5b.yaml --gpus 8 --gpu-mem 80

The recipe is laid over params.yaml (a recipe sets only the keys it changes). Teacher and student are
built on the meta device from their configs (never downloaded: hub ids map to configs/models/); the plan
prints parameter counts, the vocabulary alignment, memory per GPU by term, throughput and wall clock,
and exits non-zero naming what does not fit when the layout cannot hold the run.
"""
import itertools
from dataclasses import replace

from stages.common import StageError, lay_recipe, stage_main
from taid.plan import (
    GIB, LAYOUTS, PLACEMENTS, Setup, flops_per_token, make_plan, model_shape, resolve_config, steps_for,
)
from taid.trainer import TrainConfig

# plan: keys a recipe may set, with their defaults (see configs/recipes/*.yaml for what each means)
PLAN_DEFAULTS = {"gpu": "H100 80GB SXM", "gpus": 8, "gpu_mem_gib": 80.0, "peak_tflops": 989.0, "mfu": 0.35,
                 "layout": "fsdp", "teacher_placement": "sharded", "teacher_gpus": 0, "reserve_gib": 4.0,
                 "tokens": 0, "tokenizer_size": 0}
# outputs of earlier stages, which have the shapes of the models they come from
STAGE_OUTPUTS = {"models/student": ("distill", "student"), "models/teacher": ("teacher", "model")}


def plan_settings(params, where):
    settings = {**PLAN_DEFAULTS, **(params.get("plan") or {})}
    unknown = sorted(set(settings) - set(PLAN_DEFAULTS))
    if unknown:
        raise StageError(f"{where}: unknown plan keys {unknown}; known keys are {sorted(PLAN_DEFAULTS)}")
    for key, default in PLAN_DEFAULTS.items():
        value = settings[key]
        if isinstance(default, (int, float)) and (isinstance(value, bool) or not isinstance(value, (int, float))):
            # YAML reads 5.0e9 as a string: exponents need a sign (5.0e+9)
            raise StageError(f"{where}: plan.{key} must be a number, got {value!r}")
    return settings


def stage_models(params, stage):
    """(student source, teacher source or None, teacher settings, train settings, sequence length)."""
    if stage not in params:
        raise StageError(f"no '{stage}' section in the params and recipe")
    section = params[stage]
    teacher = section.get("teacher") or {}
    if stage == "distill":
        teacher_source = teacher.get("source") or params.get("teacher", {}).get("model")
        seq_len = params.get("prepare", {}).get("seq_len")
    else:
        teacher_source = None if section.get("method") == "sft" else teacher.get("source")
        seq_len = params.get("chat", {}).get("seq_len")
    if not section.get("student"):
        raise StageError(f"{stage}.student is not set")
    return section["student"], teacher_source, teacher, section.get("train") or {}, seq_len


def model_source(source, params):
    """A source as the planner can build it: an earlier stage's output stands for the model it comes from."""
    if source in STAGE_OUTPUTS:
        stage, key = STAGE_OUTPUTS[source]
        return params[stage][key]
    return source


def build_setup(params, stage, args, where):
    plan = plan_settings(params, where)
    student, teacher_source, teacher, train, seq_len = stage_models(params, stage)
    try:
        cfg = TrainConfig.from_params(train, where=f"{where}: {stage}.train")
    except TypeError as error:   # a required key (steps) is missing
        raise StageError(f"{where}: {stage}.train: {error}") from None
    placement = args.placement or plan["teacher_placement"]
    mode = teacher.get("mode", "live")
    if teacher_source is None:
        placement = "cache"   # no teacher in memory, as with the offline cache
    elif (placement == "cache") != (mode == "cache"):
        raise StageError(f"{where}: plan.teacher_placement is {placement} but {stage}.teacher.mode is {mode}; "
                         "the cache placement and mode: cache go together")
    setup = Setup(
        gpus=args.gpus or plan["gpus"], gpu_mem_gib=args.gpu_mem or plan["gpu_mem_gib"],
        layout=args.layout or plan["layout"], placement=placement,
        teacher_gpus=args.teacher_gpus if args.teacher_gpus is not None else plan["teacher_gpus"],
        precision="fp32" if cfg.precision == "fp32" else "bf16", teacher_dtype=teacher.get("dtype", "bfloat16"),
        batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, seq_len=seq_len or 2048, steps=cfg.steps,
        checkpointing=cfg.gradient_checkpointing, loss_chunk=cfg.loss_chunk_size,
        cache_k=(teacher.get("cache") or {}).get("k", 64), mfu=args.mfu or plan["mfu"],
        peak_tflops=plan["peak_tflops"], reserve_gib=plan["reserve_gib"],
        target_tokens=plan["tokens"] if stage == "distill" else 0,   # plan.tokens is the distill stage's
    )
    return setup, model_source(student, params), teacher_source and model_source(teacher_source, params), plan


# -- printing

def gib(n):
    return f"{n / GIB:7.2f} GiB"


def describe_model(role, source, shape):
    tied = ", tied embeddings" if shape.tied else ""
    return (f"  {role:8s} {source}: {shape.n_params / 1e9:.3f}B parameters ({shape.n_params:,}), {shape.layers} "
            f"layers, hidden {shape.hidden}, {shape.output_rows:,} output rows{tied}")


def alignment_line(plan):
    if plan.teacher is None:
        return "  vocabulary: no teacher (sft): cross-entropy over the student's rows"
    if plan.n_shared is None:
        return "  vocabulary: set plan.tokenizer_size to see the alignment"
    extra = [f"the {role}'s last {rows - plan.n_shared:,}" for role, rows in
             (("teacher", plan.teacher.output_rows), ("student", plan.student.output_rows)) if rows > plan.n_shared]
    left_out = f"; {' and '.join(extra)} rows (padding no token maps to) are left out" if extra else ""
    return (f"  vocabulary: {plan.teacher.output_rows:,} teacher vs {plan.student.output_rows:,} student output rows "
            f"over one tokenizer of {plan.n_shared:,} ids → losses compare rows 0..{plan.n_shared - 1:,}{left_out}")


def memory_lines(title, terms, setup):
    total, have = sum(terms.values()), setup.gpu_mem_gib * GIB
    verdict = f"fits, {(have - total) / GIB:.1f} GiB free" if total <= have else \
        f"DOES NOT FIT, {(total - have) / GIB:.1f} GiB over"
    return ([f"{title}"] + [f"  {name:30s}{gib(size)}" for name, size in terms.items()]
            + [f"  {'total':30s}{gib(total)} of {setup.gpu_mem_gib:.0f} GiB: {verdict}"])


def time_lines(plan, plan_cfg):
    setup = plan.setup
    student_flops, teacher_flops = flops_per_token(plan.student, plan.teacher, setup)
    teacher_term = f" + 2 × {plan.teacher.n_params / 1e9:.3f}B" if teacher_flops else ""
    lines = [f"time (MFU {setup.mfu:.0%} of {setup.peak_tflops:.0f} TFLOP/s peak per GPU, {plan_cfg['gpu']})",
             f"  FLOPs per token: 6 × {plan.student.n_params / 1e9:.3f}B{teacher_term} = "
             f"{(student_flops + teacher_flops) / 1e9:.1f} GFLOP",
             f"  throughput: {plan.tokens_per_second:,.0f} tokens/s",
             f"  {setup.steps:,} steps × {plan.tokens_per_step:,} tokens = {plan.total_tokens / 1e9:.2f}B tokens → "
             f"{plan.seconds / 3600:.1f} h ({plan.seconds / 86400:.2f} days)"]
    if plan.cache_pass_seconds:
        lines.append(f"  teacher cache pass (once, before training): {plan.cache_pass_seconds / 3600:.1f} h")
    if setup.target_tokens:
        lines.append(f"  the recipe's {setup.target_tokens / 1e9:.2f}B tokens take {steps_for(setup.target_tokens, plan):,} "
                     f"steps on {setup.student_gpus} GPUs")
    return lines


def print_plan(plan, sources, plan_cfg, where, stage):
    setup = plan.setup
    teacher_text = f", teacher {setup.placement}" + (f" on {setup.teacher_gpus} of them" if setup.teacher_gpus
                                                    and setup.placement == "separate" else "")
    rows = setup.batch_size * setup.grad_accum * setup.student_gpus
    lines = [f"plan for {where}, stage {stage}",
             "models (built on the meta device from their configs)",
             describe_model("student", sources[0], plan.student)]
    if plan.teacher is not None:
        lines.append(describe_model("teacher", sources[1], plan.teacher))
    lines += [alignment_line(plan),
              f"layout: {setup.layout} on {setup.gpus} × {plan_cfg['gpu']} ({setup.gpu_mem_gib:.0f} GiB){teacher_text}; "
              f"{setup.precision}; micro-batch {setup.batch_size} × {setup.seq_len} tokens, grad_accum "
              f"{setup.grad_accum}, global batch {rows:,} rows = {plan.tokens_per_step:,} tokens"]
    lines += memory_lines("memory per student GPU", plan.memory, setup)
    with_ckpt, without = plan.activations[True], plan.activations[False]
    lines.append(f"  activations with gradient checkpointing {with_ckpt / GIB:.2f} GiB, without {without / GIB:.2f} GiB")
    lines.append("  within a step, one at a time (the peak counts the larger): "
                 + ", ".join(f"{name} {size / GIB:.2f} GiB" for name, size in plan.transients.items() if size))
    if plan.teacher_memory:
        lines += memory_lines(f"memory per teacher GPU ({setup.teacher_gpus})", plan.teacher_memory, setup)
    lines += time_lines(plan, plan_cfg)
    print("\n".join(lines))


def layouts_that_fit(student, teacher, setup, tokenizer_size):
    """Other layouts and placements with the same GPUs and batch that would fit, fastest first."""
    found = []
    for layout, placement in itertools.product(LAYOUTS, PLACEMENTS):
        if (layout, placement) == (setup.layout, setup.placement) or placement in ("separate", "cache"):
            continue  # separate needs a GPU split and cache a cache stage: the user's call
        try:
            other = make_plan(student, teacher, replace(setup, layout=layout, placement=placement), tokenizer_size)
        except ValueError:
            continue
        if not other.problems():
            found.append((other.tokens_per_second, f"{layout} with the teacher {placement}"))
    return [text for _, text in sorted(found, reverse=True)]


def add_arguments(parser):
    parser.add_argument("--recipe", help="recipe YAML laid over params.yaml (e.g. configs/recipes/tinyswallow-1.5b.yaml)")
    parser.add_argument("--stage", default="distill", choices=["distill", "instruct"], help="stage to plan")
    parser.add_argument("--gpus", type=int, help="number of GPUs in all (default: plan.gpus)")
    parser.add_argument("--gpu-mem", type=float, help="memory per GPU in GiB (default: plan.gpu_mem_gib)")
    parser.add_argument("--layout", choices=LAYOUTS, help="parallel layout (default: plan.layout)")
    parser.add_argument("--placement", choices=PLACEMENTS, help="teacher placement (default: plan.teacher_placement)")
    parser.add_argument("--teacher-gpus", type=int, help="separate placement: GPUs holding the teacher")
    parser.add_argument("--mfu", type=float, help="assumed model FLOPs utilisation (default: plan.mfu)")


def plan_for(params, args, where):
    """The plan and what it was made from; a bad setting raises StageError naming the recipe."""
    try:
        setup, student_source, teacher_source, plan_cfg = build_setup(params, args.stage, args, where)
        student = model_shape(student_source, resolve_config(student_source))
        teacher = model_shape(teacher_source, resolve_config(teacher_source)) if teacher_source else None
        tokenizer_size = plan_cfg["tokenizer_size"] or None
        return make_plan(student, teacher, setup, tokenizer_size), (student_source, teacher_source), plan_cfg
    except ValueError as error:   # impossible layouts, unknown train keys, sizes the tokenizer does not fit
        raise StageError(f"{where}: {error}") from None


def run(args, params):
    where = args.recipe or args.params
    if args.recipe:
        params = lay_recipe(params, args.recipe)
    plan, sources, plan_cfg = plan_for(params, args, where)
    print_plan(plan, sources, plan_cfg, where, args.stage)
    problems = plan.problems()
    if problems:
        alternatives = layouts_that_fit(plan.student, plan.teacher, plan.setup, plan.n_shared)
        hint = f"; fits as: {', '.join(alternatives)}" if alternatives else \
            "; no other layout fits either: more or larger GPUs, a smaller batch_size or the cache placement"
        raise StageError("does not fit: " + "; ".join(problems) + hint)


if __name__ == "__main__":
    stage_main("plan", __doc__, add_arguments, run)
