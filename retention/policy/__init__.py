"""Rule packs: the model, and loading YAML with line numbers."""

from retention.policy.loader import Catalog, LoadedPack, load_catalog, load_file, validate_pack
from retention.policy.model import STATES, Clock, Dataset, Keep, Mask, Pack, Step

__all__ = [
    "STATES",
    "Catalog",
    "Clock",
    "Dataset",
    "Keep",
    "LoadedPack",
    "Mask",
    "Pack",
    "Step",
    "load_catalog",
    "load_file",
    "validate_pack",
]
