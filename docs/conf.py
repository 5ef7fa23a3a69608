project = "ebmgraph"
author = "the ebmgraph developers"
extensions = ["sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.mathjax", "sphinx.ext.doctest"]
napoleon_numpy_docstring = True
napoleon_google_docstring = False
autodoc_member_order = "bysource"
html_theme = "alabaster"
exclude_patterns = ["_build"]
html_title = "ebmgraph"

# The doctest builder runs every ``>>>`` block of the pages and docstrings; keep each one small.
doctest_global_setup = """
import torch
torch.set_num_threads(1)
"""
