"""Built-in defenses; importing this package registers them."""
from .auror import AurorDefense
from .bulyan import BulyanDefense
from .cclip import CClipDefense
from .clipping import NormDiffClippingDefense
from .coordinate import CoordinateWiseMedianDefense, CoordinateWiseTrimmedMeanDefense
from .crfl import CRFLDefense
from .deepsight import DeepSightDefense
from .dp import WeakDPDefense
from .fldetector import FLDetectorDefense
from .foolsgold import FoolsGoldDefense
from .geometric import GeoMedianDefense, RFADefense
from .krum import KrumDefense
from .lasa import LASADefense
from .outliers import ThreeSigmaDefense
from .residual_based_reweighting import ResidualBasedReweightingDefense
from .rflbat import RFLBATDefense
from .robust_lr import RobustLearningRateDefense
from .slsgd import SLSGDDefense
from .three_sigma import ThreeSigmaFoolsGoldDefense, ThreeSigmaGeoMedianDefense
from .arc import ARCDefense
from .bucketing import BucketingDefense
from .meamed import MeamedDefense
from .nnm import NNMDefense
from .caf import CAFDefense
from .clipped_clustering import ClippedClusteringDefense
from .dnc import DnCDefense
from .flame import FLAMEDefense
from .fltrust import FLTrustDefense
from .mda import MDADefense
from .monna import MoNNADefense
from .signguard import SignGuardDefense
from .smea import SMEADefense
from .soteria import SoteriaDefense

__all__ = ["BulyanDefense", "CClipDefense", "NormDiffClippingDefense",
           "CoordinateWiseMedianDefense", "CoordinateWiseTrimmedMeanDefense", "CRFLDefense",
           "WeakDPDefense", "FoolsGoldDefense", "GeoMedianDefense", "RFADefense", "KrumDefense",
           "ThreeSigmaDefense", "SoteriaDefense", "RobustLearningRateDefense", "SLSGDDefense",
           "ThreeSigmaGeoMedianDefense", "ThreeSigmaFoolsGoldDefense", "AurorDefense",
           "FLDetectorDefense", "LASADefense", "ResidualBasedReweightingDefense",
           "RFLBATDefense", "DeepSightDefense",
           "ARCDefense", "BucketingDefense", "MeamedDefense", "NNMDefense",
           "CAFDefense", "ClippedClusteringDefense", "DnCDefense", "FLAMEDefense",
           "FLTrustDefense", "MDADefense", "MoNNADefense", "SignGuardDefense", "SMEADefense"]
