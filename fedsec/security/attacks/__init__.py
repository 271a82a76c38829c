"""Built-in attacks; importing this package registers them."""
from .alie import AlieAttack
from .byzantine import ByzantineAttack
from .dlg import DlgAttack
from .ipm import IpmAttack
from .label_flipping import LabelFlippingAttack
from .model_replacement import ModelReplacementAttack

__all__ = ["AlieAttack", "ByzantineAttack", "DlgAttack", "IpmAttack", "LabelFlippingAttack",
           "ModelReplacementAttack"]
