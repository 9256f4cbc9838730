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
    # Mark the layout in the tree, then let lxml serialise the text in C: a Python walk
    # over every element cost three times the parse.
    etree.strip_elements(root, *_SKIP, etree.Comment, etree.ProcessingInstruction, with_tail=False)
    if root.tag in _SKIP:
        return ""
    for element in root.iter(*_BLOCK):
        element.text = "\n" + (element.text or "")
        element.tail = "\n" + (element.tail or "")
    for element in root.iter(*_CELL):
        element.tail = " " + (element.tail or "")
    return etree.tostring(root, method="text", encoding="unicode", with_tail=False)
