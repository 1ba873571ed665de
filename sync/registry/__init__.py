"""The registry: the published, versioned source of truth for every definition."""

from .document import FORMAT_VERSION, apply_definitions
from .plan import Change, diff_documents
from .store import RegistryConflict, RegistryStore

__all__ = ["FORMAT_VERSION", "Change", "RegistryConflict", "RegistryStore", "apply_definitions", "diff_documents"]
