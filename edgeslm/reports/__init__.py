"""Reports from build manifests and profile results: JSON, Markdown, self-contained HTML; baseline gate.

Nothing here imports torch: reports are made in CI jobs that may not have it.
"""
