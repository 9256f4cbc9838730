"""HTML to text with lxml: headings, paragraphs, list items and code keep their text and
their line structure; scripts, styles and page chrome are dropped."""

from __future__ import annotations

import lxml.html
from lxml import etree

# Elements whose text is never content.
_SKIP = {"script", "style", "noscript", "template", "head", "svg", "iframe", "object", "button"}
# Elements that start a new line, so words of adjacent blocks never merge.
_BLOCK = {
    "address", "article", "aside", "blockquote", "br", "dd", "details", "div", "dl", "dt",
    "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header",
    "hr", "li", "main", "nav", "ol", "p", "pre", "section", "summary", "table", "tr", "ul",
}  # fmt: skip
_CELL = {"td", "th"}


def html_to_text(html: str) -> str:
    """Visible text of an HTML document; an empty string when there is none."""
    if not html.strip():
        return ""
    try:
        root = lxml.html.document_fromstring(html)
    except (etree.ParserError, ValueError):
        return ""
    parts: list[str] = []
    _walk(root, parts)
    return "".join(parts)


def _walk(element: etree._Element, parts: list[str]) -> None:
    tag = element.tag if isinstance(element.tag, str) else ""  # comments, PIs: no tag name
    tag = tag.lower()
    if tag in _SKIP or not tag:
        return
    if tag in _BLOCK:
        parts.append("\n")
    if element.text:
        parts.append(element.text)
    for child in element:
        _walk(child, parts)
        if child.tail:
            parts.append(child.tail)
    if tag in _BLOCK:
        parts.append("\n")
    elif tag in _CELL:
        parts.append(" ")
