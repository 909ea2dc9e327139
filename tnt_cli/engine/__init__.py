"""The TNT engine: plain torch, no I/O."""

from tnt_cli.engine.model import StageTrace, TNTModel, attach_tnt
from tnt_cli.engine.noise import NoiseConfig
from tnt_cli.engine.schedule import Schedule, Stage, TokenPlan, plan_tokens

__all__ = ["NoiseConfig", "Schedule", "Stage", "StageTrace", "TNTModel", "TokenPlan", "attach_tnt", "plan_tokens"]
