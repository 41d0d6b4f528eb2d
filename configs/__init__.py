"""The shipped training recipes (YAML), installed as `hubkit.configs` so a non-editable install has them too.

`hubkit train --config tiny-cpu` (a name, no path) reads `tiny-cpu.yaml` from here; see `hubkit.config.config_file`.
"""
