"""Recipes, one module per algorithm (installed as `worldzoo.algorithms`)."""
