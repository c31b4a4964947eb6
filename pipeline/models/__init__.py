"""Registered model components (autoencoders now; backbones, objectives... as their stages land).

Every module below this package is imported by `pipeline.config.registry.discover`, so a component
is one new file with an `@register(...)` class and its config class beside it."""
