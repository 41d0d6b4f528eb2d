"""Test-wide setup: shared state lives in fixture modules under `tests/fixtures/`, never in another test file.

`tests.fixtures.hub` comes first: importing it starts the session's loopback Hub and points HF_* at it, and pytest
loads these plugins right after this file, before any test module imports huggingface_hub / datasets / transformers
(they read the environment once, at import).
"""

pytest_plugins = ["tests.fixtures.hub", "tests.fixtures.tiny_run"]
