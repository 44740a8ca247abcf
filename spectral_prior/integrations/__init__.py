"""Integrations with other libraries, each an optional extra imported explicitly: :mod:`.timm` (timm's model
registry)."""
