"""The engine-specific pieces of the training loop that a CPU cannot launch: DeepSpeed's settings and
backward, checked against stand-ins for accelerate's objects (the GPU check runs the real engine)."""
from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType

from taid import engines
from taid.trainer import TrainConfig


def deepspeed_accelerator(ds_config, processes=8):
    recorded = {}
    state = SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=ds_config))
    gradient_state = SimpleNamespace(_set_sync_gradients=lambda flag: recorded.setdefault("sync", []).append(flag))
    return SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, state=state, num_processes=processes,
                           gradient_state=gradient_state,
                           backward=lambda loss: recorded.setdefault("losses", []).append(float(loss))), recorded


def test_deepspeed_takes_its_micro_batch_accumulation_and_clipping_from_the_train_section():
    ds_config = {"gradient_accumulation_steps": "auto", "gradient_clipping": 1.0, "zero_optimization": {"stage": 3}}
    accelerator, _ = deepspeed_accelerator(ds_config)
    engines.configure(accelerator, TrainConfig(steps=1, batch_size=4, grad_accum=8, grad_clip=1.0))
    assert ds_config["train_micro_batch_size_per_gpu"] == 4 and ds_config["gradient_accumulation_steps"] == 8
    assert ds_config["train_batch_size"] == 4 * 8 * 8 and ds_config["gradient_clipping"] == 1.0


def test_a_deepspeed_config_that_disagrees_with_the_train_section_is_refused():
    accelerator, _ = deepspeed_accelerator({"gradient_accumulation_steps": 4, "gradient_clipping": 1.0})
    with pytest.raises(ValueError, match="gradient_accumulation_steps: 4 but train says 8"):
        engines.configure(accelerator, TrainConfig(steps=1, grad_accum=8))


def test_deepspeed_backward_undoes_its_own_division_and_steps_at_the_last_micro_batch():
    accelerator, recorded = deepspeed_accelerator({})
    for j in range(3):   # DeepSpeed divides each micro-batch's loss by its accumulation count (3)
        engines.backward(accelerator, torch.tensor(0.5), last_micro_batch=j == 2, grad_accum=3)
    assert recorded == {"sync": [False, False, True], "losses": [1.5, 1.5, 1.5]}


def test_other_engines_pass_the_loss_through_unchanged():
    recorded = []
    accelerator = SimpleNamespace(distributed_type=DistributedType.MULTI_GPU, backward=lambda l: recorded.append(float(l)))
    engines.backward(accelerator, torch.tensor(0.5), last_micro_batch=False, grad_accum=3)
    assert recorded == [0.5]
