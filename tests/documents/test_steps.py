"""Unit tests of each step and helper, without Ray."""

from __future__ import annotations

import json
import math

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasketch import MinHash

from pipelines.documents.chunk import chunk_batch, max_tokens, windows
from pipelines.documents.config import (
    DocsJobConfig,
    GopherConfig,
    LengthFilterConfig,
    MinHashConfig,
    NormalizeConfig,
    ReadConfig,
    RepetitionFilterConfig,
)
from pipelines.documents.dedup import _bucket_pairs, first_per_key
from pipelines.documents.filters import GopherQuality, LengthFilter, RepetitionFilter
from pipelines.documents.formatters import HtmlToText, Normalize
from pipelines.documents.html import html_to_text, markdown_without_html
from pipelines.documents.minhash import (
    Banding,
    band_keys,
    choose_banding,
    duplicates,
    jaccard_sorted,
    p_candidate,
    shingle_hashes,
    signatures,
)
from pipelines.documents.pipeline import build_steps, split_steps
from pipelines.documents.read import decode, read_file
from pipelines.documents.text import content_hash, jaccard, normalize, shingles, token_hashes
from refinery.config import ConfigError, load_job_config
from refinery.embedding import resolve_model_path

PROSE = (
    "The pipeline reads documents from many sources and keeps the ones that are worth "
    "indexing. It removes markup, normalises the text and drops documents that are too "
    "short, too long or full of spam. Then it finds documents that are the same or nearly "
    "the same and keeps one of each group, so that the index does not return the same "
    "answer many times with different ids and the corpus stays small and useful."
)


def test_html_keeps_headings_paragraphs_code_and_drops_script() -> None:
    html = (
        "<html><head><title>T</title><style>p{}</style></head><body><h1>Install</h1>"
        "<p>Run <b>pip</b> now.</p><script>alert(1)</script><pre><code>x = 1\ny = 2</code></pre>"
        "<ul><li>one</li><li>two</li></ul><!-- note --></body></html>"
    )
    text = normalize(html_to_text(html))
    assert text.split("\n\n") == ["Install", "Run pip now.", "x = 1\ny = 2", "one", "two"]
    assert html_to_text("") == ""


def test_markdown_loses_inline_html_but_not_its_code() -> None:
    markdown = (
        '<p align="center"><img src="logo.png"><br>Fast &amp; small</p>\n'
        "<!-- badges\nstart -->\n"
        "# Use <b>it</b>\n\n"
        "Call `<div>` or ``a <b> b``, see <https://x.org> and <me@x.org>; 1 < 2 > 0.\n\n"
        "````html\n<div>kept</div>\n```\n````js\n<i>still code</i>\n````\n\n"
        "~~~\n<b>tilde</b>\n~~~\n\n"
        "    <span>indented code</span>\n\n"
        "text <em>after</em>\n"
    )
    assert markdown_without_html(markdown) == (
        "\n\nFast & small\n\n\n"
        "# Use it\n\n"
        "Call `<div>` or ``a <b> b``, see <https://x.org> and <me@x.org>; 1 < 2 > 0.\n\n"
        "````html\n<div>kept</div>\n```\n````js\n<i>still code</i>\n````\n\n"
        "~~~\n<b>tilde</b>\n~~~\n\n"
        "    <span>indented code</span>\n\n"
        "text after\n"
    )


def test_normalize_nfc_controls_whitespace() -> None:
    raw = "Cafe\u0301\x00 \t bar\u200b\r\n\r\n\r\n\n  next   line  "
    assert normalize(raw) == "Caf\u00e9 bar\n\nnext line"


def test_normalize_strips_each_line_of_every_kind_of_space() -> None:
    # Spaces of other kinds (no-break, ideographic, line separator) are spaces too; a line of
    # nothing but spaces is blank; only "\n" (and CR) end a line.
    raw = "\u3000 a\u00a0\u00a0b \n \u2028 \n\t\nc\u2028d\u3000"
    assert normalize(raw) == "a b\n\nc d"
    assert normalize(" \n x \n\n\n\n y\t") == "x\n\ny"


def test_formatters_only_touch_their_documents() -> None:
    html, text = HtmlToText(None), Normalize(NormalizeConfig())  # type: ignore[arg-type]
    doc = {"text": "<p>a &amp; b</p>", "format": "text"}
    assert html.process(doc) is None and doc["text"] == "<p>a &amp; b</p>"
    doc = {"text": "<p>a &amp; b</p>", "format": "html"}
    assert html.process(doc) is None and doc["text"].strip() == "a & b"
    doc = {"text": "**a** &amp; <b>b</b>\n```\n<b>c</b>\n```", "format": "markdown"}
    assert html.process(doc) is None and doc["text"] == "**a** & b\n```\n<b>c</b>\n```"
    assert text.process({"text": " \x00 "}) == "empty"


def test_length_filter_rules_and_switches() -> None:
    step = LengthFilter(LengthFilterConfig(min_chars=5, max_chars=10))
    assert step.process({"text": "abc"}) == "too_short"
    assert step.process({"text": "a" * 11}) == "too_long"
    assert step.process({"text": "abcdef"}) is None
    off = LengthFilter(LengthFilterConfig(min_chars=None, max_chars=None))
    assert off.process({"text": ""}) is None


def test_repetition_filter() -> None:
    step = RepetitionFilter(RepetitionFilterConfig(max_run=10, ignore_chars="=-"))
    assert step.process({"text": "buy now!!!!!!!!!!!"}) == "char_run"
    assert step.process({"text": "ten " + "a" * 10}) is None
    assert step.process({"text": "Title\n" + "=" * 30}) is None


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("word " * 10, "min_words"),
        ("a b c d e " * 20 + PROSE, "min_mean_word_length"),
        (" ".join(["incomprehensibilities"] * 60), "max_mean_word_length"),
        (PROSE + " #tag" * 20, "symbol_word_ratio"),
        ("\n".join(f"- item number {i} of the list" for i in range(30)), "bullet_lines"),
        (PROSE + " 12345 ... 67890" * 40, "alpha_words"),
        (" ".join(["apple banana cherry"] * 30), "stop_words"),
        (PROSE, None),
    ],
)
def test_gopher_rules(text: str, rule: str | None) -> None:
    cfg = GopherConfig(max_symbol_word_ratio=0.1 if rule != "alpha_words" else None)
    assert GopherQuality(cfg).process({"text": text}) == rule


def _gopher_only(**rules: float) -> GopherQuality:
    """The gopher filter with every rule off but `rules`."""
    off = {name: None for name in GopherConfig.model_fields if name.startswith(("min_", "max_"))}
    return GopherQuality(GopherConfig(**{**off, **rules}))


def test_gopher_counts_words_letters_and_bullets_by_character_class() -> None:
    # A token with a letter or digit anywhere is a word ("(x)", "٣"); one with a letter is
    # alphabetic, a numeric like "²" or "Ⅷ" is not a letter; bullets count after spaces of
    # any kind, on non-blank lines only.
    words = _gopher_only(min_words=4, max_words=4)
    assert words.process({"text": "(x) ٣ -- ²² Ⅷ"}) is None
    alpha = _gopher_only(min_alpha_words_ratio=0.5)
    assert alpha.process({"text": "²² Ⅷ ٣٣ word"}) == "alpha_words"
    assert alpha.process({"text": "x² Ⅷ ٣٣ word"}) is None
    bullets = _gopher_only(max_bullet_lines_ratio=0.5)
    text = "intro line\n\n \n\u3000• one\n\t- two\nclosing words"
    assert bullets.process({"text": text}) is None
    assert bullets.process({"text": text + "\n * three"}) == "bullet_lines"


def test_gopher_rule_switched_off() -> None:
    text = " ".join(["apple banana cherry"] * 30)
    assert GopherQuality(GopherConfig(min_stop_words=None)).process({"text": text}) is None


def test_content_hash_ignores_case_space_punctuation() -> None:
    assert content_hash("Hello,  World!\n") == content_hash("hello world")
    assert content_hash("hello world") != content_hash("hello there world")


def test_shingles_and_jaccard() -> None:
    a = shingles("a b c d e f", 5)
    assert a == {b"a b c d e", b"b c d e f"}
    assert shingles("two words", 5) == {b"two words"}
    assert jaccard(a, shingles("a b c d e g", 5)) == pytest.approx(1 / 3)


def test_banding_math() -> None:
    assert p_candidate(0.8, 14, 8) == pytest.approx(1 - (1 - 0.8**8) ** 14)
    band = Banding(14, 8, 0.8)
    assert band.p_at_threshold > 0.92 and math.isclose(band.effective_threshold, (1 / 14) ** 0.125)
    chosen = choose_banding(0.8, 128)
    assert chosen.p_at_threshold >= 0.9 and chosen.bands * chosen.rows <= 128
    # One more row would fall below the recall target: chosen is the most selective.
    assert p_candidate(0.8, 128 // (chosen.rows + 1), chosen.rows + 1) < 0.9


def test_signatures_agree_with_exact_jaccard_and_band_keys() -> None:
    base = " ".join(f"w{i}" for i in range(400))
    edited = base.replace("w100 ", "x100 ").replace("w300 ", "x300 ")
    hashes = shingle_hashes(token_hashes([base, edited, base, "two words"]), 5)
    # The same n-grams as text.shingles, hashed: equal sizes, equal exact Jaccard.
    assert [len(h) for h in hashes] == [len(shingles(t, 5)) for t in (base, edited, base)] + [1]
    truth = jaccard(shingles(base, 5), shingles(edited, 5))
    assert jaccard_sorted(hashes[0], hashes[1]) == pytest.approx(truth)
    sigs = signatures(hashes[:3], num_perm=128, seed=1)
    assert sigs.shape == (3, 128)
    assert abs(float((sigs[0] == sigs[1]).mean()) - truth) < 0.1
    # datasketch's own MinHash of the same 32-bit shingle hashes gives the same signature.
    low = (hashes[0] & 0xFFFFFFFF).tolist()
    reference = MinHash(num_perm=128, seed=1, hashfunc=int)
    reference.update_batch(low)
    assert (reference.hashvalues == sigs[0]).all()
    keys = band_keys(sigs, Banding(14, 8, 0.8))
    assert keys.shape == (3, 14) and (keys[0] == keys[2]).all()
    assert len(set(keys[0].tolist())) == 14


def test_union_find_representative_is_smallest_id() -> None:
    dropped, clusters = duplicates([("c", "d"), ("b", "c"), ("x", "y")])
    assert clusters == {"b": ["b", "c", "d"], "x": ["x", "y"]}
    assert dropped == {"c", "d", "y"}


def test_first_per_key_keeps_smallest_id() -> None:
    table = pa.table({"id": ["b", "a", "c", "d"], "k": ["1", "1", "2", "2"]})
    assert first_per_key(table, "k").to_pylist() == [False, True, True, False]


def test_bucket_pairs_small_and_large_buckets() -> None:
    table = pa.table(
        {"band": [1, 1, 1, 2, 3, 3, 3, 3], "id": ["c", "a", "b", "z", "p", "q", "r", "s"]}
    )
    pairs = _bucket_pairs(table, max_pairs=3)
    got = set(zip(pairs["a"].to_pylist(), pairs["b"].to_pylist(), strict=True))
    # Bucket 1 (3 pairs): all pairs; bucket 3 (6 pairs > 3): a star on its smallest id.
    assert got == {("a", "b"), ("a", "c"), ("b", "c"), ("p", "q"), ("p", "r"), ("p", "s")}


def test_read_jsonl_quarantines_bad_lines(tmp_path) -> None:
    path = tmp_path / "docs.jsonl"
    path.write_bytes(
        b'{"id": "a", "text": "hello", "lang": "en"}\n'
        b"{broken\n"
        b'{"text": "no id"}\n'
        b'{"id": "c", "body": "no text"}\n'
        b'{"id": "d", "text": "caf\xe9"}\n'
        b"[1, 2]\n\n"
    )
    rows = list(read_file(str(path), ReadConfig()))
    docs = [r for r in rows if "error" not in r]
    assert [d["id"] for d in docs] == ["a", f"{path}#3"]
    assert json.loads(docs[0]["metadata"]) == {"lang": "en"}
    bad = [(r["error"], r["line"]) for r in rows if "error" in r]
    assert bad == [
        ("invalid_json", 2),
        ("missing_text", 4),
        ("undecodable", 5),
        ("missing_text", 6),
    ]
    latin = list(read_file(str(path), ReadConfig(encodings=["utf-8", "latin-1"])))
    assert any(r.get("text") == "café" for r in latin)


def test_read_html_declared_charset_text_parquet_and_unsupported(tmp_path) -> None:
    html = tmp_path / "page.html"
    html.write_bytes('<meta charset="iso-8859-1"><p>Grüße</p>'.encode("latin-1"))
    (doc,) = read_file(str(html), ReadConfig())
    assert doc["format"] == "html" and "Grüße" in doc["text"]
    # The text is decoded once: a page's declared charset is not applied to it again.
    assert html_to_text(doc["text"]).strip() == "Grüße"
    shift_jis = '<meta http-equiv="Content-Type" content="text/html; charset=shift_jis">'
    assert html_to_text(shift_jis + "<p>日本 — café</p>").strip() == "日本 — café"
    xml = '<?xml version="1.0" encoding="latin-1"?><html><body>Grüße</body></html>'
    assert html_to_text(xml) == "Grüße"
    utf16 = tmp_path / "notes.txt"
    utf16.write_text("wide text", encoding="utf-16")
    assert next(read_file(str(utf16), ReadConfig()))["text"] == "wide text"
    table = pa.table({"id": [1, 2], "text": ["first", None], "tag": ["x", "y"]})
    pq.write_table(table, tmp_path / "t.parquet")
    rows = list(read_file(str(tmp_path / "t.parquet"), ReadConfig()))
    assert rows[0]["id"] == "1" and json.loads(rows[0]["metadata"]) == {"tag": "x"}
    assert rows[1]["error"] == "missing_text"
    (tmp_path / "x.bin").write_bytes(b"\x00")
    assert next(read_file(str(tmp_path / "x.bin"), ReadConfig()))["error"] == "unsupported_format"
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    assert next(read_file(str(tmp_path / "bad.parquet"), ReadConfig()))["error"] == "unreadable"


def test_decode_order() -> None:
    assert decode("é".encode("utf-8-sig"), ["latin-1"]) == "é"
    assert decode(b"\xff\xfe", ["utf-8"]) == ""
    assert decode(b"\xe9", ["utf-8"]) is None


def test_windows_cover_with_overlap() -> None:
    assert windows(10, 4, 1) == [(0, 4), (3, 7), (6, 10)]
    assert windows(3, 4, 1) == [(0, 3)]
    assert windows(0, 4, 1) == []


def test_chunks_are_model_sized_and_ids_stable() -> None:
    path = resolve_model_path("all-MiniLM-L6-v2")
    assert max_tokens(path) == 254
    text = " ".join(f"word{i}" for i in range(300))
    table = pa.table(
        {"id": ["d1"], "doc_id": ["d1"], "text": [text], "source": ["s"], "metadata": ["{}"]}
    )
    first = chunk_batch(table, path, size=64, overlap=8).to_pylist()
    again = chunk_batch(table, path, size=64, overlap=8).to_pylist()
    assert first == again and len(first) > 3
    assert all(c["n_tokens"] <= 64 and c["doc_id"] == "d1" for c in first)
    assert [c["id"] for c in first[:2]] == ["d1@0", f"d1@{first[1]['char_start']}"]
    assert all(text[c["char_start"] : c["char_end"]] == c["text"] for c in first)


def test_config_defaults_and_errors(tmp_path) -> None:
    cfg = load_job_config(DocsJobConfig, "configs/docs.yaml")
    names = [s.name for s in build_steps(cfg.steps)]
    assert names[:2] == ["html_to_text", "normalize"] and names[-1] == "embed"
    bad = tmp_path / "bad.yaml"
    bad.write_text("steps:\n  - step: gopher\n    min_wrds: 3\n")
    with pytest.raises(ConfigError, match="min_wrds"):
        load_job_config(DocsJobConfig, bad)
    with pytest.raises(ValueError, match="num_perm"):
        MinHashConfig(bands=20, rows=8)
    steps = build_steps(DocsJobConfig.model_validate({"steps": [{"step": "exact_dedup"}]}).steps)
    steps += build_steps([LengthFilterConfig()])
    with pytest.raises(ConfigError, match="must come before"):
        split_steps(steps)
    off = DocsJobConfig.model_validate({"steps": [{"step": "gopher", "enabled": False}]})
    assert build_steps(off.steps) == []
