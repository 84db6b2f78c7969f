"""PDF rendering of the engine's report model with Qt, headless (no browser).

QTextDocument lays out the same HTML as the HTML report, with images passed
as document resources, paginated here to A4 with numbered pages. Qt moves a
table row to the next page only when every cell's first line would fall
there, so a pair whose three caption lines still fit above the page's foot
kept them there and sent its images to the next page; and it has no
keep-with-next, so a section heading could end a page. Laying the document
out finds both: the pairs table is cut before such a row (the template starts
a new table on a new page there) and such a heading starts the next page.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path

from PySide6.QtCore import QByteArray, QMarginsF, QPointF, QRectF, QSizeF, Qt, QUrl
from PySide6.QtGui import (
    QFont,
    QFontMetricsF,
    QGuiApplication,
    QImage,
    QPageSize,
    QPainter,
    QPdfWriter,
    QTextCursor,
    QTextDocument,
    QTextTable,
)

from side_engine.report import render_html


def write_pdf(model: dict, out: Path) -> Path:
    app = pdf_application()  # noqa: F841 (keeps Qt alive)
    writer = a4_writer(out)
    writer.setTitle("SIDE Audit report")
    writer.setCreator(model["tool"])
    _print(paginated(model, writer), writer)
    return out


def pdf_application() -> QGuiApplication:
    """The Qt application a PDF is laid out in. The app's own when it runs; otherwise one on Qt's
    offscreen platform, whatever the environment says: a PDF needs Qt's fonts and painting, never
    a screen, and the platform Qt would pick by default (xcb) aborts the process where there is
    no display or its system libraries are missing — a headless GPU server, where audits run."""
    app = QGuiApplication.instance()
    if app is None:
        app = QGuiApplication(["side-audit", "-platform", "offscreen"])  # -platform overrides QT_QPA_PLATFORM
    return app


def a4_writer(out: Path) -> QPdfWriter:
    writer = QPdfWriter(str(out))
    writer.setPageSize(QPageSize(QPageSize.PageSizeId.A4))
    writer.setPageMargins(QMarginsF(15, 15, 15, 15))
    writer.setResolution(150)
    return writer


def paginated(model: dict, writer: QPdfWriter) -> QTextDocument:
    """The report laid out on the writer's pages: headings kept with what follows, the pairs
    table cut before every row that would straddle a page (one fix per layout, top down)."""
    breaks: list[int] = []
    headings: set[int] = set()
    while True:  # each layout is fresh: Qt's incremental relayout after format edits lost pages
        doc = _document(dict(model, pair_page_breaks=breaks), writer, headings)
        lonely = [h for h in _lonely_headings(doc) if h not in headings]  # (one that moved and stays alone: left)
        if lonely:
            headings.add(lonely[0])
            if lonely[0] in _followed_by_heading(doc):  # "Appendix" then "A.1": one break, before both
                headings.discard(lonely[0] + 1)
            continue
        cut = _first_straddling_pair(doc)
        if cut is None or cut in breaks:  # a row taller than a page cannot be helped
            return doc
        breaks = sorted(breaks + [cut])


def _document(model: dict, writer: QPdfWriter, heading_breaks: set[int] = frozenset()) -> QTextDocument:
    """The report laid out on the writer's pages, with room at each page's foot for its number;
    the section headings numbered in ``heading_breaks`` (0: the first h2) start a page."""
    images: dict[str, QImage] = {}

    def src(data: bytes, name: str) -> str:
        img = QImage()
        img.loadFromData(QByteArray(data), "PNG")
        images[name] = img
        return f"img:{name}"

    ordinal = itertools.count()

    def heading(tag: re.Match) -> str:
        return '<h2 style="page-break-before: always">' if next(ordinal) in heading_breaks else tag[0]

    html = re.sub(r"<h2(?:\s[^>]*)?>", heading, render_html(model, image_src=src))
    doc = QTextDocument()
    doc.setDefaultFont(QFont("Sans Serif", 7))
    doc.setDefaultStyleSheet("td, th { font-size: 6.5pt; } h1 { font-size: 14pt; } h2 { font-size: 11pt; }")
    for name, img in images.items():
        doc.addResource(QTextDocument.ResourceType.ImageResource, QUrl(f"img:{name}"), img)
    doc.setHtml(html)
    doc.documentLayout().setPaintDevice(writer)
    frame = doc.rootFrame().frameFormat()
    frame.setMargin(0)
    frame.setBottomMargin(2 * QFontMetricsF(doc.defaultFont(), writer).height())
    doc.rootFrame().setFrameFormat(frame)
    doc.setPageSize(QSizeF(writer.width(), writer.height()))
    return doc


def _first_straddling_pair(doc: QTextDocument) -> int | None:
    """Index (in the report's pair list) of the first pair whose row runs over a page break:
    some line of one of its cells (an image is a line) lies on a later page than the row's top."""
    layout, height = doc.documentLayout(), doc.pageSize().height()
    before = 0  # pairs in the pair tables above
    for table in doc.rootFrame().childFrames():
        if not (isinstance(table, QTextTable) and _is_pair_table(table)):
            continue
        for r in range(1, table.rows()):  # row 0: the header
            pages = {int(y // height) for c in range(table.columns()) for y in _line_tops(layout, table.cellAt(r, c))}
            if len(pages) > 1:
                return before + r - 1
        before += table.rows() - 1
    return None


def _line_tops(layout, cell) -> list[float]:
    """Document y of every line in a table cell (a cell's lines move down, not its blocks, when
    Qt breaks the page inside it)."""
    tops, block, last = [], cell.firstCursorPosition().block(), cell.lastCursorPosition().block()
    while block.isValid():
        tops += _block_line_tops(layout, block)
        if block == last:
            break
        block = block.next()
    return tops


def _lonely_headings(doc: QTextDocument) -> list[int]:
    """Ordinals of the section headings (h2) whose next paragraph or table starts on a later
    page than the heading ("3. Top pairs" sat alone at a page's foot)."""
    layout, height = doc.documentLayout(), doc.pageSize().height()
    block, ordinal, lonely = doc.begin(), -1, []
    while block.isValid():
        if block.blockFormat().headingLevel() == 2 and QTextCursor(block).currentTable() is None:
            ordinal += 1
            tops = _block_line_tops(layout, block)
            page = int(tops[0] // height) if tops else 0
            following, seen = block.next(), 0
            while tops and following.isValid() and seen < 2:
                if any(int(y // height) > page for y in _block_line_tops(layout, following)):
                    lonely.append(ordinal)
                    break
                if following.blockFormat().headingLevel() or QTextCursor(following).currentTable() is not None:
                    break  # a heading, or a table's first cell (Qt keeps a header with the first row)
                following, seen = following.next(), seen + 1
        block = block.next()
    return lonely


def _followed_by_heading(doc: QTextDocument) -> set[int]:
    """Ordinals of the section headings (h2) whose very next block is the next h2."""
    block, ordinal, out = doc.begin(), -1, set()
    while block.isValid():
        if block.blockFormat().headingLevel() == 2 and QTextCursor(block).currentTable() is None:
            ordinal += 1
            if block.next().isValid() and block.next().blockFormat().headingLevel() == 2:
                out.add(ordinal)
        block = block.next()
    return out


def _block_line_tops(layout, block) -> list[float]:
    top, lines = layout.blockBoundingRect(block).top(), block.layout()
    return [top + lines.lineAt(i).y() for i in range(lines.lineCount())]


def _is_pair_table(table: QTextTable) -> bool:
    header = [table.cellAt(0, c).firstCursorPosition().block().text() for c in range(table.columns())]
    return header[-2:] == ["pair", "decision"]


def _print(doc: QTextDocument, writer: QPdfWriter) -> None:
    """Each page of the paginated ``doc``, its number at the foot on the right."""
    page = doc.pageSize()
    foot = doc.rootFrame().frameFormat().bottomMargin()
    painter = QPainter(writer)
    try:
        painter.setFont(doc.defaultFont())
        for i in range(doc.pageCount()):
            if i:
                writer.newPage()
            painter.save()
            painter.translate(0, -i * page.height())
            doc.drawContents(painter, QRectF(QPointF(0, i * page.height()), page))
            painter.restore()
            painter.drawText(QRectF(0, page.height() - foot, page.width(), foot),
                             int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom), str(i + 1))
    finally:
        painter.end()
