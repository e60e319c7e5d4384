"""Infrastructure with no PatchCore knowledge: atomic files and locks, runtime tuning, registries, the schema."""
