"""YAML -> metamodel: reading with locations, the JSON Schema, building, checks."""
