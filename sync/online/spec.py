"""What an online store needs to know about one version of one feature view."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..definitions import Feature, FeatureView, feature_view_from_dict
from ..errors import FeatureStoreError
from .encoding import ValueCodec


@dataclass(frozen=True)
class OnlineView:
    """One version of a feature view as the online store holds it.

    Its values live in the field ``<name>@<version>`` of each entity key's hash, so a
    reader that knows version 3 from the registry never decodes version 2's bytes.
    """

    name: str
    version: int
    entities: tuple[str, ...]
    join_keys: tuple[str, ...]
    key_types: tuple[str, ...]  # per join key, from the entity catalog
    features: tuple[Feature, ...]
    ttl_seconds: int | None = None
    codec: ValueCodec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "codec", ValueCodec(self.name, self.features))

    @property
    def field(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def schema_tag(self) -> int:
        return self.codec.tag

    @classmethod
    def of(cls, view: FeatureView, version: int, entities: dict[str, dict]) -> OnlineView:
        key_types: dict[str, str] = {}
        for name in view.entities:
            entity = entities.get(name)
            if entity is None:
                raise FeatureStoreError(f"{view.name}: entity {name!r} is not in the registry's entity catalog")
            for key in entity["join_keys"]:
                key_types[key] = entity["value_type"]
        return cls(view.name, int(version), tuple(view.entities), tuple(view.join_keys),
                   tuple(key_types.get(k, "int64") for k in view.join_keys), tuple(view.features), view.ttl_seconds)

    @classmethod
    def from_registry(cls, doc: dict, name: str) -> OnlineView:
        """The view as the registry document ``doc`` publishes it now."""
        raw = doc.get("feature_views", {}).get(name)
        if raw is None:
            known = ", ".join(sorted(doc.get("feature_views", {}))) or "none"
            raise FeatureStoreError(f"unknown feature view {name!r} (known: {known})")
        return cls.of(feature_view_from_dict(raw), raw["version"], doc.get("entities", {}))

    def catalog_entry(self) -> dict:
        """What the store records about the view, so it can purge it without the registry."""
        return {"view": self.name, "version": self.version, "entities": list(self.entities),
                "schema_tag": self.schema_tag}
