"""Activation Beacon on stock HF Llama/Qwen2/Mistral models: planner, memory, runner, generation, training."""

from flagembed.longctx.beacon.memory import BeaconMemory
from flagembed.longctx.beacon.model import BeaconModel, load_beacon_model
from flagembed.longctx.beacon.params import attach_beacon_params, beacon_state_dict, freeze_base
from flagembed.longctx.beacon.planner import BeaconSettings, Planner, StepPlan, memory_formula
from flagembed.longctx.beacon.session import BeaconSession

__all__ = [
    "BeaconMemory",
    "BeaconModel",
    "BeaconSession",
    "BeaconSettings",
    "Planner",
    "StepPlan",
    "attach_beacon_params",
    "beacon_state_dict",
    "freeze_base",
    "load_beacon_model",
    "memory_formula",
]
