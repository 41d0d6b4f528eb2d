"""A Space's README (`hubkit space`), and the lines a model card gains when a Space demonstrates it: pure
functions of their inputs.

The README's front matter is the Hub's Spaces configuration (hub-docs, "Spaces configuration reference"): `sdk`,
`sdk_version` (the Gradio the app was written and tested with: the Hub installs that one itself), `python_version`,
`app_file`, and `models`, which puts the Space on the model's page under "Spaces using this model".
"""

from __future__ import annotations

import re

from hubkit.cards.citation import HUBKIT

TITLE_EMOJI = "🩻"
# The Hub's colours for a Space's thumbnail gradient (hub-docs spaces-config-reference.md)
COLORS = ("red", "yellow", "green", "blue", "indigo", "purple", "pink", "gray")
SHORT_DESCRIPTION_MAX = 60  # the Hub cuts a longer short_description
# Marks the lines a model card gains (`with_space_link`), so a later run replaces them instead of adding more.
LINK_START, LINK_END = "<!-- hubkit:space -->", "<!-- /hubkit:space -->"


def render_space_readme(space_id: str, model_id: str, *, gradio_version: str, python_version: str,
                        wheel: str | None, private_model: bool = True) -> str:
    """README.md of a Space that demonstrates `model_id`: the Spaces metadata, what the app does, and how it
    installs hubkit (`wheel`: the file shipped beside app.py; None when it installs from source)."""
    name = space_id.split("/", 1)[1]
    token = ("\nThe model repo is private: add a secret named `HF_TOKEN` (a token that can read it) in this Space's "
             "settings, or the app cannot load the model.\n" if private_model else "")
    install = (f"`app.py` installs `{wheel}`, the hubkit that wrote this Space (no package index has hubkit), "
               "without its dependencies; `requirements.txt` lists them: hubkit's and its `inference` extra's."
               if wheel else "`requirements.txt` installs hubkit from its source, with its `inference` extra.")
    return f"""---
title: {name}
emoji: {TITLE_EMOJI}
colorFrom: blue
colorTo: gray
sdk: gradio
sdk_version: {gradio_version}
python_version: "{python_version}"
app_file: app.py
pinned: false
license: apache-2.0
short_description: Lumbar spine MRI grades from a DICOM study
models:
  - {model_id}
tags:
  - hubkit
  - medical-imaging
  - dicom
  - lumbar-spine
---

# {name}

A demo of [{model_id}](https://huggingface.co/{model_id}): upload a zipped DICOM study of the lumbar spine (one
folder per series) and see the 25 graded fields (5 conditions at 5 levels, normal/mild, moderate or severe) with
their probabilities, the images the model was given and, where the model ships a level localiser, the points it
placed. Not a medical device: research use only.
{token}
It runs on a CPU (slowly: a progress bar shows each step) and on a GPU when the Space has one.

## How it was made

Written by `hubkit space {space_id} --model {model_id}`. {install} The app itself is
`hubkit.space.app`, tested in a browser against the same pipeline a consumer calls
(`pipeline("lumbar-classify", model="{model_id}")`).

```bibtex
{HUBKIT.strip()}
```
"""


def space_link_lines(space_id: str, url: str) -> str:
    """The marked lines a model card gains: where to try the model."""
    return (f"{LINK_START}\n**Try it:** [{space_id}]({url}), a demo Space: upload a zipped DICOM study, see the "
            f"grades, the images the model was given and the levels' points.\n{LINK_END}")


def with_space_link(card: str, space_id: str, url: str) -> str:
    """`card` with the Space's lines after its first heading (or replacing the lines an earlier Space put there)."""
    block = space_link_lines(space_id, url)
    marked = re.compile(re.escape(LINK_START) + r".*?" + re.escape(LINK_END), re.S)
    if marked.search(card):
        return marked.sub(lambda _: block, card, count=1)
    heading = re.search(r"^# .*$", card, re.M)
    if heading is None:  # no title: after the front matter, or first
        from huggingface_hub.repocard import REGEX_YAML_BLOCK  # the front matter as the Hub's client splits it

        front = REGEX_YAML_BLOCK.search(card)
        at = front.end() if front else 0
        return card[:at] + "\n" + block + "\n\n" + card[at:]
    return card[:heading.end()] + "\n\n" + block + "\n" + card[heading.end():]


def linked_space(card: str) -> tuple[str, str] | None:
    """(Space id, URL) of the Space a card links (`with_space_link`), or None: a later render of the model card
    keeps the link."""
    m = re.search(re.escape(LINK_START) + r".*?\[([^\]]+)\]\(([^)]+)\).*?" + re.escape(LINK_END), card, re.S)
    return (m.group(1), m.group(2)) if m else None
