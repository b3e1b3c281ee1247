"""Sphinx configuration of the book's website (``python -m book.site``, ``make site``).

The source folder is ``build/site_src/``, which ``book.site.stage`` assembles from the committed notebooks, the
figures, the home page and generated API pages; this file lives apart from it so that the staging can be wiped.
Nothing here reaches the network: notebooks are read as executed (never re-executed), and MathJax is served from
the site's own ``_static/mathjax/`` (the files come with the ``sphinx-mathjax-offline`` package).
"""
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))  # autodoc imports reference/ and kernels/ from this checkout
os.environ.setdefault("TRITON_INTERPRET", "1")  # kernels/ imports triton; no GPU is needed to read its docstrings

project = "LM Primer"
author = "the LM Primer authors"
copyright = "LM Primer authors, MIT licence"
html_title = "LM Primer: large models from the equations up"

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "numpydoc",
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # copies MathJax 3 into _static/mathjax and points mathjax_path at it
]

root_doc = "index"
exclude_patterns = ["_build", "**.ipynb_checkpoints"]
suppress_warnings = ["myst.header"]  # chapters number their own headings (1.1, 1.2, ...), starting at H2 after the title

# The notebooks: as committed, never executed here.
nb_execution_mode = "off"
nb_merge_streams = True                 # a cell's many prints read as one block
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
myst_dmath_double_inline = True

# Maths: the local copy; chtml output uses the woff fonts next to it.
mathjax_path = "mathjax/tex-chtml.js"
mathjax3_config = {"options": {"enableMenu": False}}  # the menu would try to load speech-rule files lazily

# The API reference, from the numpydoc docstrings.
autodoc_default_options = {"members": True, "member-order": "bysource", "undoc-members": False}
autodoc_typehints = "none"
autodoc_mock_imports = []
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_validation_checks = set()
numpydoc_xref_param_type = False

html_theme = "sphinx_book_theme"
html_static_path = [str(Path(__file__).parent / "static")]
html_css_files = ["book.css"]
html_last_updated_fmt = None
html_copy_source = False
html_show_sourcelink = False
html_theme_options = {
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "use_download_button": False,
    "use_fullscreen_button": False,
    "show_toc_level": 2,
    "navigation_with_keys": False,
}
autodoc_inherit_docstrings = False  # torch.autograd.Function.forward would bring its own docstring and broken links
html_favicon = str(Path(__file__).parent / "static" / "favicon.png")
html_context = {"default_mode": "light"}  # one look for every reader and every screenshot
