"""Notebooks and result sets: where results are kept."""
