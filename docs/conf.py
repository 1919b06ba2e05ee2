"""Sphinx configuration for the epyclab documentation."""

from __future__ import annotations

import epyclab

project = "epyclab"
author = "the epyclab developers"
copyright = "2026, the epyclab developers"
release = epyclab.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_heading_anchors = 3
autodoc_member_order = "bysource"
autodoc_typehints = "description"
# The API is epyc's: camelCase methods whose docstrings are the reference.
autodoc_default_options = {"members": True, "show-inheritance": True}
nitpicky = False
html_theme = "alabaster"
html_title = f"epyclab {release}"
