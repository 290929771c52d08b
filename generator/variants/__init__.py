"""Variants: one small registered class per artifact kind (see ``registry``)."""
