"""Built-in defenses; importing this package registers them."""
from .arc import ARCDefense
from .auror import AurorDefense
from .bucketing import BucketingDefense
from .bulyan import BulyanDefense
from .caf import CAFDefense
from .cclip import CClipDefense
from .clipped_clustering import ClippedClusteringDefense
from .coordinate_wise import CoordinateWiseMedianDefense, CoordinateWiseTrimmedMeanDefense
from .crfl import CRFLDefense
from .deepsight import DeepSightDefense
from .dnc import DnCDefense
from .flame import FLAMEDefense
from .fldetector import FLDetectorDefense
from .fltrust import FLTrustDefense
from .foolsgold import FoolsGoldDefense
from .geo_median import GeoMedianDefense
from .krum import KrumDefense
from .lasa import LASADefense
from .mda import MDADefense
from .meamed import MeamedDefense
from .monna import MoNNADefense
from .nnm import NNMDefense
from .norm_diff_clipping import NormDiffClippingDefense
from .residual_based_reweighting import ResidualBasedReweightingDefense
from .rfa import RFADefense
from .rflbat import RFLBATDefense
from .robust_learning_rate import RobustLearningRateDefense
from .signguard import SignGuardDefense
from .slsgd import SLSGDDefense
from .smea import SMEADefense
from .soteria import SoteriaDefense
from .three_sigma import ThreeSigmaDefense, ThreeSigmaFoolsGoldDefense, ThreeSigmaGeoMedianDefense
from .weak_dp import WeakDPDefense

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
