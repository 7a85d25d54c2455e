"""The one HTML page shell of the experiment's own pages (index, findings, seeds), from one jinja2 template.

Each page builds its body; the shell gives it the title, the shared style and the document around it.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
from markupsafe import Markup

_ENV = jinja2.Environment(loader=jinja2.FileSystemLoader(Path(__file__).parent / "templates"),
                          autoescape=jinja2.select_autoescape(["html", "j2"]), keep_trailing_newline=True)


def page(title: str, body: str, width: int = 1200) -> str:
    """A whole HTML page: `title` is escaped, `body` is HTML the caller built (and escaped) itself."""
    return _ENV.get_template("page.html.j2").render(title=title, body=Markup(body), width=width)
