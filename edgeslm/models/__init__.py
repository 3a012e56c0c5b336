"""Model sources (resolution is torch-free) and loading (torch, inside functions)."""
