"""Citations a card gives: hubkit's own (the one home of the text `CITATION.cff` repeats), the RSNA 2024 data's, and
whatever a base model's or a dataset's own card gives, read from that card and never written from memory.

    >>> from hubkit.cards.citation import citation_of
    >>> citation_of("# M\\n\\n## Citation\\n\\n```bibtex\\n@article{x, title={X}}\\n```\\n")
    '@article{x, title={X}}'
"""

from __future__ import annotations

import re

from hubkit import __version__

HUBKIT = f"""@software{{hubkit,
  title   = {{hubkit: DICOM to a fine-tuned, published MedGemma lumbar-spine classifier and back}},
  author  = {{{{the hubkit authors}}}},
  version = {{{__version__}}},
  year    = {{2026}},
  license = {{Apache-2.0}}
}}"""
# The data hubkit's RSNA builds come from: the competition, and the dataset's own publication (its authors and venue
# are on the publication itself; the competition page links it).
RSNA = ("""@misc{rsna2024lumbar,
  title        = {RSNA 2024 Lumbar Spine Degenerative Classification},
  author       = {{Radiological Society of North America}},
  year         = {2024},
  howpublished = {Kaggle competition},
  url          = {https://www.kaggle.com/competitions/rsna-2024-lumbar-spine-degenerative-classification}
}""", """@misc{lumbardisc,
  title = {The {RSNA} Lumbar Degenerative Imaging Spine Classification ({LumbarDISC}) Dataset},
  year  = {2025},
  note  = {the data of the RSNA 2024 Lumbar Spine Degenerative Classification competition}
}""")

_HEADING = re.compile(r"^(#{1,6})\s*\**\s*(citation|bibtex|cite)\b", re.I | re.M)
_FENCE = re.compile(r"```[^\n]*\n(.*?)```", re.S)


def citation_of(card_text: str | None) -> str | None:
    """The first code block under a card's Citation (or BibTeX) heading, as that card gives it; None if it has none."""
    if not card_text:
        return None
    m = _HEADING.search(card_text)
    if m is None:
        return None
    rest = card_text[m.end():]
    nxt = re.search(rf"^#{{1,{len(m.group(1))}}}\s", rest, re.M)  # the section ends at the next heading of its level
    block = _FENCE.search(rest[:nxt.start()] if nxt else rest)
    text = block.group(1).strip() if block else ""
    return text if text.startswith("@") else None


def dataset_citation(source: str) -> str | None:
    """What a dataset's own card (README.md of its folder or Hub repo) gives as its citation; None when it has none
    or the card cannot be read (a cosmetic enrichment: never an error)."""
    from pathlib import Path

    from hubkit.sources import locate

    try:
        loc = locate(source, "dataset")
        if loc.path is not None:
            card = (loc.path if loc.path.is_dir() else loc.path.parent) / "README.md"
            return citation_of(card.read_text(encoding="utf-8")) if card.is_file() else None
        from hubkit.hub import download_file

        return citation_of(Path(download_file(loc.repo_id, "README.md", repo_type="dataset")).read_text("utf-8"))
    except Exception:  # noqa: BLE001 - a card without a readable citation is a card without one
        return None


def unique(citations) -> list[str]:
    """The citations given, each once, in order, empty ones left out."""
    return list(dict.fromkeys(c.strip() for c in citations if c and c.strip()))
