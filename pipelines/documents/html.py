"""HTML to text with lxml: headings, paragraphs, list items and code keep their text and
their line structure; scripts, styles and page chrome are dropped. Markdown loses the HTML
tags written inline in it (README badges, `<p align="center">`), its code kept as written."""

from __future__ import annotations

import html
import re

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
# lxml refuses a str that still declares its encoding: the text is decoded already.
_XML_DECLARATION = re.compile(r"\A\s*<\?xml[^>]*\?>")


def html_to_text(html: str) -> str:
    """Visible text of an HTML document; an empty string when there is none."""
    if not html.strip():
        return ""
    try:
        root = lxml.html.document_fromstring(_XML_DECLARATION.sub("", html, count=1))
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


# A tag or comment: `<` then a name (or `/`, `!--`), never `a < b`, `<https://...>` or `<a@b>`.
_TAG = re.compile(r"<!--.*?-->|<(/?)([A-Za-z][A-Za-z0-9-]*)(?:\s[^<>]*)?/?>", re.S)
_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_CODE_SPAN = re.compile(r"(`+).+?\1", re.S)


def markdown_without_html(markdown: str) -> str:
    """Markdown with its HTML tags and comments removed (their text kept; a block tag
    leaves a line break) and entities decoded; fenced and indented code and code spans stay
    as written."""
    out: list[str] = []
    prose: list[str] = []
    fence, indented, blank = "", False, True
    for line in markdown.splitlines(keepends=True):
        opening = _FENCE.match(line)
        if fence:  # until a line of only the fence's character, at least as many
            bare = line.strip()
            if len(bare) >= len(fence) and bare == fence[0] * len(bare):
                fence = ""
            out.append(line)
        elif opening:
            out.append(_prose("".join(prose)))
            prose, fence = [], opening.group(1)
            out.append(line)
        elif (blank or indented) and line.startswith(("    ", "\t")) and line.strip():
            out.append(_prose("".join(prose)))
            prose, indented = [], True
            out.append(line)
        else:
            indented = indented and not line.strip()
            prose.append(line)
        blank = not line.strip()
    out.append(_prose("".join(prose)))
    return "".join(out)


def _prose(text: str) -> str:
    """Tags out of the text between code spans."""
    parts, start = [], 0
    for span in _CODE_SPAN.finditer(text):
        parts += [_untagged(text[start : span.start()]), span.group(0)]
        start = span.end()
    parts.append(_untagged(text[start:]))
    return "".join(parts)


def _untagged(text: str) -> str:
    def replace(tag: re.Match[str]) -> str:
        return "\n" if (tag.group(2) or "").lower() in _BLOCK else ""

    return html.unescape(_TAG.sub(replace, text))
