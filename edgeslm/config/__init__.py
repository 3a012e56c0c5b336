"""Recipe, target and devices files: parsing and validation only (no torch, no paramiko)."""
