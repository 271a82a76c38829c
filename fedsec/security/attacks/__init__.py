"""Built-in attacks; importing this package registers them."""
from .alie import AlieAttack
from .badnets import BadNetsAttack
from .blended import BlendedAttack
from .byzantine import ByzantineAttack
from .dba import DbaAttack
from .dlg import DlgAttack
from .edge_case import EdgeCaseAttack
from .fang import FangAttack
from .gaussian import GaussianAttack
from .inf import InfAttack
from .inverting_gradients import InvertingGradientsAttack
from .ipm import IpmAttack
from .label_flipping import LabelFlippingAttack
from .mimic import MimicAttack
from .min_max import MinMaxAttack, MinSumAttack
from .model_replacement import ModelReplacementAttack
from .neurotoxin import NeurotoxinAttack
from .revealing_labels import RevealingLabelsAttack
from .sign_flipping import SignFlippingAttack

__all__ = ["AlieAttack", "ByzantineAttack", "DlgAttack", "IpmAttack", "LabelFlippingAttack",
           "ModelReplacementAttack", "InvertingGradientsAttack", "RevealingLabelsAttack",
           "FangAttack", "GaussianAttack", "InfAttack", "MimicAttack", "MinMaxAttack",
           "MinSumAttack", "SignFlippingAttack", "BadNetsAttack", "BlendedAttack", "DbaAttack",
           "EdgeCaseAttack", "NeurotoxinAttack"]
