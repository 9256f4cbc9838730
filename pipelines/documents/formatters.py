"""Formatters: steps that rewrite a document's text."""

from __future__ import annotations

from pipelines.documents.config import HtmlToTextConfig, NormalizeConfig
from pipelines.documents.html import html_to_text, markdown_without_html
from pipelines.documents.steps import Doc, Formatter
from pipelines.documents.text import normalize


class HtmlToText(Formatter):
    """HTML documents (by the reader's format column) become their visible text; markdown
    ones lose the HTML written inline in them."""

    name = "html_to_text"

    def __init__(self, cfg: HtmlToTextConfig) -> None:
        self.cfg = cfg

    def applies(self, doc: Doc) -> bool:
        return doc.get("format") in ("html", "markdown")

    def rewrite(self, doc: Doc) -> str:
        if doc["format"] == "markdown":
            return markdown_without_html(doc["text"])
        return self.format(doc["text"])

    def format(self, text: str) -> str:
        return html_to_text(text)


class Normalize(Formatter):
    """Unicode normal form, no control characters, tidy whitespace."""

    name = "normalize"

    def __init__(self, cfg: NormalizeConfig) -> None:
        self.form = cfg.form

    def format(self, text: str) -> str:
        return normalize(text, self.form)
