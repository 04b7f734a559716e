"""The knowledge the assistant retrieves from: curated finding entries plus the user's own documents.

A finding entry is one markdown file, esi/rag/knowledge/<category>/<entry_id>.md, with YAML front matter
(id, title, category, aliases) and `## ` sections (Summary, Waveform criteria, Leads, Look-alikes).
User documents are markdown, text or PDF files (e.g. textbooks the user owns); they carry no entry id and
serve only as extra context.
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import yaml

PACKAGE_DIR = Path(__file__).resolve().parent
REQUIRED_KEYS = ("id", "title", "category")
USER_DOC_SUFFIXES = (".md", ".markdown", ".txt", ".pdf")
_SECTION = re.compile(r"^##\s+(.+?)\s*$", re.MULTILINE)


class KnowledgeFormatError(ValueError):
    """A knowledge or user-document file that cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{path}: {reason}")


@dataclass(frozen=True)
class KnowledgeEntry:
    """One finding of the knowledge base.

    sections maps a section title ("Summary", "Waveform criteria", ...) to its markdown body.
    """

    id: str
    title: str
    category: str
    aliases: tuple[str, ...]
    sections: dict[str, str] = field(hash=False)
    path: Path

    @property
    def names(self) -> tuple[str, ...]:
        """Title first, then aliases: every name a statement may use for this finding."""
        return (self.title, *self.aliases)

    def section(self, name: str) -> str:
        """The body of section `name` (case-insensitive), "" if the entry has none."""
        for title, body in self.sections.items():
            if title.casefold() == name.casefold():
                return body
        return ""

    @property
    def summary(self) -> str:
        return self.section("Summary")

    def criteria(self) -> list[str]:
        """The bullet points of "Waveform criteria", without their leading dash."""
        return bullets(self.section("Waveform criteria"))

    def context(self) -> str:
        """The full entry as plain text: what a generation backend reads about this finding."""
        head = self.title + (f" (also: {', '.join(self.aliases)})" if self.aliases else "")
        parts = [head] + [f"{title}:\n{body}" for title, body in self.sections.items() if body]
        return "\n\n".join(parts)


@dataclass(frozen=True)
class UserDocument:
    """The text of one user document (one page for a PDF)."""

    text: str
    source: Path
    page: int | None = None

    @property
    def label(self) -> str:
        return f"{self.source.name}" + (f" p.{self.page}" if self.page is not None else "")


def bullets(markdown: str) -> list[str]:
    """The items of a markdown bullet list ("- x" / "* x"), continuation lines joined to their item."""
    items: list[str] = []
    for line in markdown.splitlines():
        stripped = line.strip()
        if re.match(r"^[-*]\s+", stripped):
            items.append(re.sub(r"^[-*]\s+", "", stripped))
        elif stripped and items:
            items[-1] += " " + stripped
    return items


def default_knowledge_dir() -> Path:
    """The knowledge base bundled with the package."""
    return PACKAGE_DIR / "knowledge"


def split_front_matter(text: str, path: Path) -> tuple[dict, str]:
    """(front-matter mapping, body) of a markdown file that starts with a '---' YAML block."""
    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        raise KnowledgeFormatError(path, "does not start with a '---' front-matter block")
    try:
        end = next(i for i in range(1, len(lines)) if lines[i].strip() == "---")
    except StopIteration:
        raise KnowledgeFormatError(path, "front-matter block is not closed by '---'") from None
    try:
        meta = yaml.safe_load("\n".join(lines[1:end])) or {}
    except yaml.YAMLError as err:
        raise KnowledgeFormatError(path, f"front matter is not valid YAML: {err}") from err
    if not isinstance(meta, dict):
        raise KnowledgeFormatError(path, "front matter must be a mapping of key: value")
    return meta, "\n".join(lines[end + 1:])


def split_sections(body: str) -> dict[str, str]:
    """'## Title' sections of a markdown body -> {title: stripped text}, in file order."""
    matches = list(_SECTION.finditer(body))
    sections = {}
    for i, match in enumerate(matches):
        end = matches[i + 1].start() if i + 1 < len(matches) else len(body)
        sections[match.group(1)] = body[match.end():end].strip()
    return sections


def parse_entry(path: str | os.PathLike) -> KnowledgeEntry:
    """Read one knowledge entry file.

    Args:
        path: a markdown file with front matter (id, title, category, aliases) and '## ' sections.

    Raises:
        KnowledgeFormatError: missing keys, an id that differs from the file name, no Summary section, ...
    """
    path = Path(path)
    meta, body = split_front_matter(path.read_text(encoding="utf-8"), path)
    missing = [k for k in REQUIRED_KEYS if not str(meta.get(k) or "").strip()]
    if missing:
        raise KnowledgeFormatError(path, f"front matter lacks {', '.join(missing)}")
    entry_id = str(meta["id"]).strip()
    if entry_id != path.stem:
        raise KnowledgeFormatError(path, f"id {entry_id!r} differs from the file name {path.stem!r}")
    aliases = meta.get("aliases") or []
    if isinstance(aliases, str):
        aliases = [aliases]
    if not isinstance(aliases, list):
        raise KnowledgeFormatError(path, f"aliases must be a list, got {aliases!r}")
    sections = split_sections(body)
    if not any(title.casefold() == "summary" for title in sections):
        raise KnowledgeFormatError(path, "has no '## Summary' section")
    return KnowledgeEntry(
        id=entry_id,
        title=str(meta["title"]).strip(),
        category=str(meta["category"]).strip(),
        aliases=tuple(str(a).strip() for a in aliases if str(a).strip()),
        sections=sections,
        path=path,
    )


def entry_files(directory: str | os.PathLike) -> list[Path]:
    """The entry files under a knowledge folder, sorted (README.md files at any depth are not entries)."""
    directory = Path(directory)
    return sorted(p for p in directory.rglob("*.md") if p.name.lower() != "readme.md")


def load_knowledge_base(directory: str | os.PathLike | None = None) -> list[KnowledgeEntry]:
    """Parse every entry of a knowledge folder.

    Args:
        directory: the folder of <category>/<entry_id>.md files; None for the bundled knowledge base.

    Raises:
        FileNotFoundError: the folder does not exist or holds no entry.
        KnowledgeFormatError: a malformed entry, or two entries with one id.
    """
    directory = Path(directory) if directory is not None else default_knowledge_dir()
    if not directory.is_dir():
        raise FileNotFoundError(f"knowledge folder not found: {directory}")
    files = entry_files(directory)
    if not files:
        raise FileNotFoundError(f"knowledge folder {directory} holds no <category>/<entry_id>.md file")
    entries: list[KnowledgeEntry] = []
    seen: dict[str, Path] = {}
    for path in files:
        entry = parse_entry(path)
        if entry.id in seen:
            raise KnowledgeFormatError(path, f"id {entry.id!r} is already used by {seen[entry.id]}")
        seen[entry.id] = path
        entries.append(entry)
    return entries


def user_document_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """The files named by `paths` (files, or folders searched recursively), sorted.

    A folder's files with other suffixes are skipped with a warning that names them; a file named
    directly must have a supported suffix (.md, .markdown, .txt, .pdf).
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))
            skipped = [p for p in found if p.suffix.lower() not in USER_DOC_SUFFIXES]
            if skipped:
                warnings.warn(f"user documents: skipping {len(skipped)} file(s) that are not markdown, text or "
                              f"PDF under {path}: {', '.join(p.name for p in skipped[:5])}", stacklevel=2)
            files += [p for p in found if p.suffix.lower() in USER_DOC_SUFFIXES]
        elif path.is_file():
            if path.suffix.lower() not in USER_DOC_SUFFIXES:
                raise KnowledgeFormatError(path, f"unsupported document type {path.suffix!r}; "
                                                 f"use one of {', '.join(USER_DOC_SUFFIXES)}")
            files.append(path)
        else:
            raise FileNotFoundError(f"user document not found: {path}")
    return sorted(set(files))


def read_user_document(path: str | os.PathLike) -> list[UserDocument]:
    """The text of one markdown, text or PDF file (PDF: one UserDocument per page with text)."""
    path = Path(path)
    if path.suffix.lower() == ".pdf":
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError

        try:
            reader = PdfReader(str(path))
            if reader.is_encrypted:
                raise KnowledgeFormatError(path, "PDF is encrypted; decrypt it first")
            pages = [(i + 1, page.extract_text() or "") for i, page in enumerate(reader.pages)]
        except PdfReadError as err:
            raise KnowledgeFormatError(path, f"not a readable PDF: {err}") from err
        docs = [UserDocument(text.strip(), path, number) for number, text in pages if text.strip()]
        if not docs:
            raise KnowledgeFormatError(path, "PDF has no extractable text (a scanned document needs OCR first)")
        return docs
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise KnowledgeFormatError(path, f"not UTF-8 text: {err}") from err
    if not text.strip():
        raise KnowledgeFormatError(path, "document is empty")
    return [UserDocument(text.strip(), path)]


def load_user_documents(paths: Sequence[str | os.PathLike]) -> list[UserDocument]:
    """Read every user document under `paths` (see `user_document_files`)."""
    return [doc for path in user_document_files(paths) for doc in read_user_document(path)]


def content_hash(files: Iterable[Path], root_names: dict[Path, str] | None = None, extra: Iterable[str] = ()) -> str:
    """SHA-256 over file names and contents plus `extra` strings: changes whenever any source changes.

    Args:
        files: the files whose content matters.
        root_names: optional {file: stable name} so that moving a checkout does not change the hash.
        extra: further settings that change the result (model id, chunking, format version).
    """
    digest = hashlib.sha256()
    for path in files:
        name = (root_names or {}).get(path, str(path))
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    for item in extra:
        digest.update(b"\1" + str(item).encode())
    return digest.hexdigest()
