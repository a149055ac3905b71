"""What the training loop does differently under each accelerate engine (DDP, FSDP2, DeepSpeed ZeRO-3).

The loop itself stays one loop; this module holds the few places where an engine needs something else:
the teacher's placement, the backward call, the check that every process agrees, and the trained
model gathered back into an ordinary module for saving.
"""
import torch
from accelerate import PartialState
from accelerate.utils import DistributedType, parse_flag_from_env

from taid.teachers import LiveTeacher


class RankDisagreementError(RuntimeError):
    pass


def process_state():
    """This process's place among those ``accelerate launch`` started, read the way the training loop's
    Accelerator reads it (a bare ``PartialState()`` ignores ``ACCELERATE_USE_CPU`` and, with no GPU,
    would take each of several CPU processes for the only one)."""
    return PartialState(cpu=parse_flag_from_env("ACCELERATE_USE_CPU"))


def configure(accelerator, cfg):
    """Engine settings the stage's train section decides. DeepSpeed owns accumulation and clipping, so
    its config must say what the train section says; it also needs the micro-batch, since no dataloader
    goes through ``prepare``."""
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return
    ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
    for key, wanted in (("gradient_accumulation_steps", cfg.grad_accum), ("gradient_clipping", cfg.grad_clip)):
        if ds_config.get(key, "auto") not in ("auto", wanted):
            raise ValueError(f"the DeepSpeed config sets {key}: {ds_config[key]} but train says {wanted}; "
                             f"make them equal (configs/accelerate/zero3.yaml)")
        ds_config[key] = wanted
    ds_config["train_micro_batch_size_per_gpu"] = cfg.batch_size
    ds_config["train_batch_size"] = cfg.batch_size * cfg.grad_accum * accelerator.num_processes


def place_teacher(accelerator, objective):
    """Put the teacher where the engine wants it: under FSDP sharded like the student (each process holds
    1/N of its layers, gathered one layer at a time for inference); otherwise whole on this process's
    device (or where its ``device_map`` put it)."""
    teacher = objective.teacher
    if accelerator.distributed_type == DistributedType.FSDP and isinstance(teacher, LiveTeacher):
        shard_for_inference(teacher.model)
        teacher.model.eval()
        return
    objective.to(accelerator.device)


def shard_for_inference(model):
    """FSDP2 over the model's repeated blocks (``_no_split_modules``), then over the rest of it: the
    embeddings, final norm and LM head form the root group, gathered for each forward."""
    from torch.distributed.fsdp import fully_shard

    block_names = set(getattr(model, "_no_split_modules", None) or ())
    for module in model.modules():
        if type(module).__name__ in block_names:
            fully_shard(module, reshard_after_forward=True)
    fully_shard(model, reshard_after_forward=True)
    model.requires_grad_(False)


def backward(accelerator, loss, last_micro_batch, grad_accum):
    """Backward of a micro-batch's share of the step's token mean. DeepSpeed divides by its own
    accumulation count and steps itself at the boundary, so it is told which micro-batch is the last and
    the division is undone."""
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        accelerator.gradient_state._set_sync_gradients(last_micro_batch)
        loss = loss * grad_accum
    accelerator.backward(loss)


def check_same_everywhere(accelerator, name, value):
    """Raise when the processes hold different values of a scalar that must be equal on every rank
    (TAID's t drives every rank's loss: a divergence would silently train N different objectives)."""
    if accelerator.num_processes == 1:
        return
    values = accelerator.gather(torch.tensor([float(value)], dtype=torch.float64, device=accelerator.device))
    if not torch.all(values == values[0]):
        raise RankDisagreementError(f"{name} differs across processes: {values.tolist()}")


def plain_model(accelerator, model):
    """The trained model as an ordinary module, on the main process (None elsewhere). Engines that shard
    the model gather its full state first, a collective every process takes part in."""
    if accelerator.distributed_type not in (DistributedType.FSDP, DistributedType.DEEPSPEED):
        return accelerator.unwrap_model(model)
    state = accelerator.get_state_dict(model)
    if not accelerator.is_main_process:
        return None
    sharded = accelerator.unwrap_model(model)
    with torch.device("meta"):
        plain = type(sharded)(sharded.config)
    plain.load_state_dict(state, assign=True, strict=False)
    plain.tie_weights()
    missing = [name for name, p in plain.named_parameters() if p.is_meta]
    if missing:
        raise RuntimeError(f"the gathered state dict lacks {missing[:5]}")
    return plain
