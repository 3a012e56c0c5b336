"""Build folder layout, manifest and the content-addressed build cache."""
