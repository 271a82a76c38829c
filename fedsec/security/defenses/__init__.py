"""Built-in defenses; importing this package registers them."""
from .bulyan import BulyanDefense
from .cclip import CClipDefense
from .clipping import NormDiffClippingDefense
from .coordinate import CoordinateWiseMedianDefense, CoordinateWiseTrimmedMeanDefense
from .crfl import CRFLDefense
from .dp import WeakDPDefense
from .foolsgold import FoolsGoldDefense
from .geometric import GeoMedianDefense, RFADefense
from .krum import KrumDefense
from .outliers import ThreeSigmaDefense
from .robust_lr import RobustLearningRateDefense
from .slsgd import SLSGDDefense

__all__ = ["BulyanDefense", "CClipDefense", "NormDiffClippingDefense",
           "CoordinateWiseMedianDefense", "CoordinateWiseTrimmedMeanDefense", "CRFLDefense",
           "WeakDPDefense", "FoolsGoldDefense", "GeoMedianDefense", "RFADefense", "KrumDefense",
           "ThreeSigmaDefense", "RobustLearningRateDefense", "SLSGDDefense"]
