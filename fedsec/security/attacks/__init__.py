"""Built-in attacks; importing this package registers them."""
from .alie import AlieAttack
from .byzantine import ByzantineAttack
from .dlg import DlgAttack
from .inverting_gradients import InvertingGradientsAttack
from .ipm import IpmAttack
from .label_flipping import LabelFlippingAttack
from .model_replacement import ModelReplacementAttack
from .revealing_labels import RevealingLabelsAttack

__all__ = ["AlieAttack", "ByzantineAttack", "DlgAttack", "IpmAttack", "LabelFlippingAttack",
           "ModelReplacementAttack", "InvertingGradientsAttack", "RevealingLabelsAttack"]
