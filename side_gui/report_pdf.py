"""PDF rendering of the engine's report model with Qt, headless (no browser).

QTextDocument lays out the same HTML as the HTML report, with images passed
as document resources; ``print_`` paginates to A4 and numbers the pages.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QMarginsF, QSizeF, QUrl
from PySide6.QtGui import QFont, QGuiApplication, QImage, QPageSize, QPdfWriter, QTextDocument

from side_engine.report import render_html


def write_pdf(model: dict, out: Path) -> Path:
    app = QGuiApplication.instance() or QGuiApplication([])  # noqa: F841 (keeps Qt alive)
    images: dict[str, QImage] = {}

    def src(data: bytes, name: str) -> str:
        img = QImage()
        img.loadFromData(QByteArray(data), "PNG")
        images[name] = img
        return f"img:{name}"

    html = render_html(model, image_src=src)
    doc = QTextDocument()
    doc.setDefaultFont(QFont("Sans Serif", 7))
    doc.setDefaultStyleSheet("td, th { font-size: 6.5pt; } h1 { font-size: 14pt; } h2 { font-size: 11pt; }")
    for name, img in images.items():
        doc.addResource(QTextDocument.ResourceType.ImageResource, QUrl(f"img:{name}"), img)
    doc.setHtml(html)
    writer = QPdfWriter(str(out))
    writer.setPageSize(QPageSize(QPageSize.PageSizeId.A4))
    writer.setPageMargins(QMarginsF(15, 15, 15, 15))
    writer.setResolution(150)
    writer.setTitle("SIDE Audit report")
    writer.setCreator(model["tool"])
    doc.setPageSize(QSizeF())  # let print_ paginate with page numbers
    doc.print_(writer)
    return out
