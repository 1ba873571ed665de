"""A feature and embedding store on object storage, driven by a dbt project.

Layers: manifest -> registry -> offline / online -> serving.
"""

from .definitions import Entity, Feature, FeatureRef, FeatureService, FeatureView
from .errors import FeatureStoreError, ValidationError
from .feature_store import FeatureStore

__all__ = [
    "Entity", "Feature", "FeatureRef", "FeatureService", "FeatureStore", "FeatureStoreError",
    "FeatureView", "ValidationError",
]
__version__ = "0.1.0"
