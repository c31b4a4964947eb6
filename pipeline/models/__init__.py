"""Registered model components (autoencoders now; backbones, objectives... as their stages land).

A component is two modules: `<name>_config.py` (torch-free: its pydantic config, registered with
`@register_config(kind, name, component="module:Class")`) and `<name>.py` (the nn.Module, with
`@register(kind, name, config=...)`). `pipeline.config.registry.discover` imports only the `*_config`
modules, so validating an experiment never imports torch; `registry.build` imports the component."""
