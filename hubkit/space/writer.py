"""`hubkit space OWNER/NAME --model REPO`: write a demo Space's files and push them as a Space repo.

    hubkit space me/lumbar-demo --model me/lumbar-medgemma              # push (private)
    hubkit space me/lumbar-demo --model me/lumbar-medgemma --output sp  # write only

The Space holds four files and nothing else (no weights: the app loads the model repo; no token: a private model
needs the Space's `HF_TOKEN` secret): `app.py` (installs the wheel beside it, then runs `hubkit.space.app`),
`requirements.txt` (hubkit's dependencies and its `inference` extra's, read from this hubkit's own metadata),
`README.md` (the Spaces metadata: `cards.space`) and this hubkit's wheel. After a push, the model's card gains a
line linking the Space (one more commit to the model repo, when the token may write it).
"""

from __future__ import annotations

import logging
import os
import platform
import re
from importlib import metadata
from pathlib import Path

from hubkit._imports import DISTRIBUTION

from . import APP_FILE, REQUIREMENTS_FILE, SPACE_FILES

log = logging.getLogger("hubkit")

APP_TEMPLATE = '''"""The demo Space of {model}, written by `hubkit space` (hubkit {version})."""
import glob
import os
import subprocess
import sys

try:
    import hubkit  # noqa: F401
except ImportError:  # no package index has hubkit: the wheel beside this file (requirements.txt has what it needs)
    here = os.path.dirname(os.path.abspath(__file__))
    subprocess.check_call([sys.executable, "-m", "pip", "install", "--no-deps",
                           *glob.glob(os.path.join(here, "hubkit_lumbar-*.whl"))])

from hubkit.space.app import launch

launch(os.environ.get("HUBKIT_MODEL", "{model}"), host=os.environ.get("GRADIO_SERVER_NAME", "0.0.0.0"))
'''


def requirements(lines: list[str] | None = None) -> list[str]:
    """What the app needs beside hubkit itself: the base install's requirements and the `inference` extra's, as
    this hubkit's metadata states them (`lines`: `Requires-Dist` values, this hubkit's by default), each with the
    environment marker it carries besides the extra's (Gradio is the Space's own: its `sdk_version`)."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    out = []
    for line in (metadata.requires(DISTRIBUTION) or []) if lines is None else lines:
        req = Requirement(line)
        if canonicalize_name(req.name) == DISTRIBUTION:
            continue  # an extra naming another extra of hubkit itself
        marker = str(req.marker) if req.marker else ""
        named = re.findall(r'\bextra == "([^"]+)"', marker)
        if named and named != ["inference"]:
            continue
        rest = re.sub(r'^extra == "inference"$|\s+and extra == "inference"|extra == "inference" and\s+', "", marker)
        req.marker = None
        out.append(f"{req}; {rest}" if rest else str(req))
    return sorted(set(out), key=str.lower)


def write_space(output: str | os.PathLike, space_id: str, model: str, private_model: bool = True) -> Path:
    """Write the Space's files into OUTPUT (see the module docstring); returns OUTPUT.

    Raises:
        ValueError: a malformed Space or model repo id. RuntimeError: this hubkit's wheel could not be built.
    """
    from hubkit.cards.space import render_space_readme
    from hubkit.packaging import wheel_of_this_hubkit
    from hubkit.sources import is_repo_id

    for value, what in ((space_id, "the Space"), (model, "--model")):
        if not is_repo_id(value):
            raise ValueError(f"{what}: {value!r} is not a Hub repo id (OWNER/NAME); the Space loads the model from "
                             "the Hub, so push the run first (`hubkit push RUN OWNER/NAME`)")
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob(SPACE_FILES[-1]):
        old.unlink()  # another version's wheel would be pushed beside this one
    wheel = wheel_of_this_hubkit(out).name
    version = metadata.version(DISTRIBUTION)
    (out / APP_FILE).write_text(APP_TEMPLATE.format(model=model, version=version))
    (out / REQUIREMENTS_FILE).write_text("# hubkit's dependencies and its inference extra's (hubkit: the wheel, "
                                         "installed by app.py)\n" + "\n".join(requirements()) + "\n")
    (out / "README.md").write_text(render_space_readme(space_id, model, gradio_version=_gradio_version(),
                                                       python_version=".".join(platform.python_version_tuple()[:2]),
                                                       wheel=wheel, private_model=private_model))
    return out


def _gradio_version() -> str:
    """The Gradio the app is tested with here (`sdk_version`); the extra's floor when Gradio is not installed."""
    try:
        return metadata.version("gradio")
    except metadata.PackageNotFoundError:
        return "6.31.0"


def publish_space(space_id: str, model: str, output: str | os.PathLike, private: bool = True,
                  link_model: bool = True, token: str | None = None):
    """Write the Space into OUTPUT and push it in one commit (private unless asked); then link it from the model's
    card when the token may write the model repo (a warning otherwise). HubError first when this token cannot read
    the model repo. Returns (the Space's `PushResult`, whether
    the model card links it)."""
    from hubkit.cards.metadata import check_card
    from hubkit.hub import HubError, push_files, repo_is_private

    # HubError now when this token cannot read the model: a Space of a model it cannot load would only show an error
    private_model = repo_is_private(model, "model", token)
    out = write_space(output, space_id, model, private_model=private_model)
    res = push_files(out, space_id, "space", "hubkit space: the demo app", allow_patterns=list(SPACE_FILES),
                     private=private, token=token, validate=lambda text: check_card(text, "space"))
    if not link_model:
        return res, False
    try:
        link_from_model_card(model, space_id, res.url, token)
    except HubError as e:
        log.warning("the Space is pushed, but the model card could not link it: %s", e)
        return res, False
    return res, True


def link_from_model_card(model: str, space_id: str, url: str, token: str | None = None):
    """One commit to the model repo: its README.md with the Space's link (`cards.space.with_space_link`); no commit
    when the card already links it."""
    from hubkit.cards.metadata import check_card
    from hubkit.cards.space import with_space_link
    from hubkit.hub import update_text_file

    return update_text_file(model, "README.md", lambda card: with_space_link(card, space_id, url), "model",
                            f"Link the demo Space {space_id} (hubkit space)", token=token,
                            validate=lambda text: check_card(text, "model"))
