"""tsubame's distillation core: TAID and baseline losses, the TAID schedule, the chunked loss, the trainer."""
from taid.schedule import TAIDSchedule

__all__ = ["TAIDSchedule"]
