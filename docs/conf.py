from pallets_sphinx_themes import ProjectLink, get_version

# Project --------------------------------------------------------------

project = "flask-maintenance-tasks"
copyright = "2026 the flask-maintenance-tasks authors"
author = "the flask-maintenance-tasks authors"
release, version = get_version("flask-maintenance-tasks")

# General --------------------------------------------------------------

# Nothing here may reach the network at build time: no intersphinx.
extensions = [
    "sphinx.ext.autodoc",
    "pallets_sphinx_themes",
]
exclude_patterns = ["_build"]
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_preserve_defaults = True

# HTML -----------------------------------------------------------------

_repository = "https://github.com/flask-maintenance-tasks/flask-maintenance-tasks"
html_theme = "flask"
html_context = {
    "project_links": [
        ProjectLink("Source Code", _repository),
        ProjectLink("Issue Tracker", f"{_repository}/issues"),
        ProjectLink("Changes", f"{_repository}/blob/main/CHANGES.rst"),
    ]
}
html_sidebars = {
    "index": ["project.html", "localtoc.html", "searchbox.html"],
    "**": ["localtoc.html", "relations.html", "searchbox.html"],
}
singlehtml_sidebars = {"index": ["project.html", "localtoc.html"]}
html_title = f"flask-maintenance-tasks Documentation ({version})"
html_show_sourcelink = False
