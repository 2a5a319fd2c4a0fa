"""Dynamic loss scaling for fp16 gradients (the rule of ``torch.amp.GradScaler``, host-side).

The loss is multiplied by ``scale`` before backward so that small fp16 gradients do not
flush to zero; the gradients are divided by it again in fp32. A step whose gradients hold
inf/NaN is skipped and the scale halves; after ``growth_interval`` clean steps in a row it
doubles. Skipped steps are counted, never hidden.
"""

from __future__ import annotations

import math

from muse._checks import check_float, check_int

MIN_SCALE = 2.0**-24  # floor: halving further cannot help, the skip-fraction check fails the run
MAX_SCALE = 2.0**24  # ceiling: larger scales overflow any fp16 gradient


def check_power_of_two(name: str, value: float) -> float:
    """``value`` if it is 2**k: only then is multiplying by it and by 1/value exact."""
    if math.frexp(value)[0] != 0.5:
        raise ValueError(f"{name} must be a power of two (unscaling is exact only then), got {value:g}")
    return value


class DynamicLossScaler:
    """Loss scale, clean-step counter and skipped-step counter; state is plain JSON."""

    def __init__(self, init_scale: float = 2.0**16, growth_factor: float = 2.0,
                 backoff_factor: float = 0.5, growth_interval: int = 1000):
        self.scale = check_power_of_two(
            "init_scale", check_float("init_scale", init_scale, min_value=MIN_SCALE, max_value=MAX_SCALE))
        self.growth_factor = check_power_of_two(
            "growth_factor", check_float("growth_factor", growth_factor, min_value=1.0))
        self.backoff_factor = check_power_of_two("backoff_factor", check_float(
            "backoff_factor", backoff_factor, min_value=0.0, max_value=1.0, min_inclusive=False,
            max_inclusive=False))
        self.growth_interval = check_int("growth_interval", growth_interval, min_value=1)
        self.growth_tracker = 0  # clean steps since the last change of scale
        self.skipped_steps = 0

    def update(self, found_inf: bool) -> None:
        """Back off (and count a skipped step) on overflow; grow after enough clean steps."""
        if found_inf:
            self.scale = max(self.scale * self.backoff_factor, MIN_SCALE)
            self.growth_tracker = 0
            self.skipped_steps += 1
            return
        self.growth_tracker += 1
        if self.growth_tracker >= self.growth_interval:
            self.scale = min(self.scale * self.growth_factor, MAX_SCALE)
            self.growth_tracker = 0

    def state_dict(self) -> dict:
        return {
            "scale": self.scale, "growth_factor": self.growth_factor,
            "backoff_factor": self.backoff_factor, "growth_interval": self.growth_interval,
            "growth_tracker": self.growth_tracker, "skipped_steps": self.skipped_steps,
        }

    def load_state_dict(self, state: dict) -> None:
        missing = sorted({"scale", "growth_tracker", "skipped_steps"} - set(state))
        if missing:
            raise ValueError(f"loss-scaler state is missing {missing}")
        self.scale = check_power_of_two("loss-scaler state scale", float(state["scale"]))
        self.growth_factor = check_power_of_two(
            "loss-scaler state growth_factor", float(state.get("growth_factor", self.growth_factor)))
        self.backoff_factor = check_power_of_two(
            "loss-scaler state backoff_factor", float(state.get("backoff_factor", self.backoff_factor)))
        self.growth_interval = int(state.get("growth_interval", self.growth_interval))
        self.growth_tracker = int(state["growth_tracker"])
        self.skipped_steps = int(state["skipped_steps"])
