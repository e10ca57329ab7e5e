"""The messages' words: Jinja2 templates per locale, a deployment's folder first, the shipped ones after.

A kind's template (``<locale>/<kind>.txt``) holds the blocks ``subject``, ``text`` and ``sms``. The
e-mail's HTML is ``<locale>/<kind>.html`` where there is one, else ``<locale>/layout.html`` around the
text's paragraphs; HTML templates are autoescaped.
"""

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, StrictUndefined, TemplateNotFound, select_autoescape

SHIPPED = Path(__file__).resolve().parent / "templates"


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str
    sms: str


def when(value: str | None) -> str:
    """An ISO moment as the letters show it: ``2026-12-03 10:00 UTC``."""
    if not value:
        return ""
    return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M UTC")


class Templates:
    def __init__(self, override_dir: str = "") -> None:
        folders = [override_dir] if override_dir else []
        self.env = Environment(
            loader=ChoiceLoader([FileSystemLoader(folder) for folder in [*folders, str(SHIPPED)]]),
            autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False, default=False),
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
        )
        self.env.filters["when"] = when

    def render(self, locale: str, kind: str, context: dict[str, Any]) -> Rendered:
        template = self.env.get_template(f"{locale}/{kind}.txt")

        def block(name: str) -> str:
            return "".join(template.blocks[name](template.new_context(context))).strip()

        subject, text, sms = block("subject"), block("text"), block("sms")
        try:
            html = self.env.get_template(f"{locale}/{kind}.html").render(context, subject=subject, locale=locale)
        except TemplateNotFound:
            paragraphs = [p.strip() for p in text.split("\n\n") if p.strip()]
            html = self.env.get_template(f"{locale}/layout.html").render(subject=subject, paragraphs=paragraphs, locale=locale)
        return Rendered(subject=" ".join(subject.split()), text=text + "\n", html=html, sms=" ".join(sms.split()))
