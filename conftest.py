"""Repository-wide pytest setup: load the MUSE plugin (profiles, GPU pinning, records) for tests/ and verification/."""

pytest_plugins = ["verification.plugin"]
