"""Built-in attacks; importing this package registers them."""
from .alie import ALIEAttack
from .badnets import BadNetsAttack
from .blended import BlendedAttack
from .byzantine import ByzantineAttack
from .dba import DBAAttack
from .dlg import DLGAttack
from .edge_case import EdgeCaseAttack
from .fang import FangAttack
from .gaussian import GaussianAttack
from .inf import InfAttack
from .inverting_gradients import InvertingGradientsAttack
from .ipm import IPMAttack
from .label_flipping import LabelFlippingAttack
from .mimic import MimicAttack
from .min_max import MinMaxAttack, MinSumAttack
from .model_replacement import ModelReplacementAttack
from .neurotoxin import NeurotoxinAttack
from .revealing_labels import RevealingLabelsAttack
from .sign_flipping import SignFlippingAttack

__all__ = ["ALIEAttack", "ByzantineAttack", "DLGAttack", "IPMAttack", "LabelFlippingAttack",
           "ModelReplacementAttack", "InvertingGradientsAttack", "RevealingLabelsAttack",
           "FangAttack", "GaussianAttack", "InfAttack", "MimicAttack", "MinMaxAttack",
           "MinSumAttack", "SignFlippingAttack", "BadNetsAttack", "BlendedAttack", "DBAAttack",
           "EdgeCaseAttack", "NeurotoxinAttack"]
