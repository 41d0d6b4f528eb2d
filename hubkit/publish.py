"""Publishing what hubkit built, without rebuilding or retraining it: a dataset folder or a run folder -> a Hub repo.

    hubkit push runs/ds me/lumbar-ds            # a build-dataset folder: Parquet + card + manifest + chart
    hubkit push runs/seed me/medgemma-lumbar    # a train run folder: adapter, processor, config, card

    from hubkit.publish import push
    res = push("runs/ds", "me/lumbar-ds")       # PushResult(url, commit, changed)

Private by default, one commit, and no commit at all when nothing changed. The dataset card is re-rendered from the
folder's manifest with the real repo id (its snippet loads that repo); every file a card links to travels in the
same commit; a run's card is rendered for the repo it goes to on every push. `build-dataset --push`, `train
--push`, `calibrate --push` and `card --push` call this after their work; `check` runs before it.
"""

from __future__ import annotations

import os
from pathlib import Path

from hubkit.eval_record import SNAPSHOT_FILE
from hubkit.run_record import CALIBRATION_FILE, PUBLISHED

# What each run-folder push uploads: everything a run publishes, or only the card's files, or the calibration with
# the card that shows it. The card is rendered for the repo every time, whichever it is.
CARD_FILES = ("README.md", "card_assets/*", SNAPSHOT_FILE)
RUN_PUSHES = {"all": PUBLISHED, "card": CARD_FILES, "calibration": (CALIBRATION_FILE, *CARD_FILES)}
_MESSAGES = {"all": "hubkit push: adapter, processor, config and card", "card": "Update model card (hubkit card)",
             "calibration": "Add calibration (hubkit calibrate) and the card that shows it"}


def kind_of(path: str | os.PathLike) -> str:
    """"dataset" for a build-dataset folder, "model" for a finished train run folder.

    Raises:
        FileNotFoundError: neither (the message says what each holds), or a run that has not finished.
    """
    from hubkit.run_record import RUN_FILE, check_finished

    p = Path(path)
    if (p / "dataset_dict.json").is_file():
        return "dataset"
    if (p / RUN_FILE).is_file():
        check_finished(p)
        return "model"
    raise FileNotFoundError(f"{p}: not a dataset folder (dataset_dict.json, from `hubkit build-dataset`) nor a run "
                            "folder (an adapter and its run record, from `hubkit train`)")


def check(repo_id: str, repo_type: str, private: bool = True, token: str | None = None) -> str:
    """Before the long work: can this token push `repo_id` as asked? Returns the user name (HubError if not)."""
    from hubkit.hub import check_push_access

    return check_push_access(repo_id, repo_type, private=private, token=token)


def push(path: str | os.PathLike, repo_id: str, private: bool = True, token: str | None = None):
    """Push a dataset folder or a run folder (see the module docstring); returns `hubkit.hub.PushResult`.

    Raises:
        FileNotFoundError: not a folder hubkit built. HubError: token, access, visibility, or the upload.
    """
    kind = kind_of(path)
    return push_dataset_folder(path, repo_id, private, token) if kind == "dataset" else \
        push_run_folder(path, repo_id, private, token)


def push_dataset_folder(folder: str | os.PathLike, repo_id: str, private: bool = True, token: str | None = None):
    """Push a `hubkit build-dataset` output folder in one commit; returns `PushResult`."""
    from hubkit.cards.dataset import CHART_FILE, render_dataset_card
    from hubkit.cards.metadata import check_card
    from hubkit.hub import push_dataset
    from hubkit.manifest import MANIFEST_FILE, read_manifest

    folder = Path(folder)
    manifest = read_manifest(folder) if folder.is_dir() else None
    card_text = render_dataset_card(manifest, repo_id) if manifest is not None else None
    extra = [folder / name for name in (MANIFEST_FILE, CHART_FILE) if (folder / name).is_file()]
    from hubkit.localizer import FOLDER

    extra += sorted((folder / FOLDER).glob("*"))  # the localiser the crops were cut with (training ships it)
    return push_dataset(folder, repo_id, private=private, token=token, card_text=card_text, extra_files=extra,
                        validate=lambda text: check_card(text, "dataset"))


def push_run_folder(run_dir: str | os.PathLike, repo_id: str, private: bool = True, token: str | None = None,
                    files: str = "all"):
    """Push a finished run folder's distributable files (`files`: "all", "card" or "calibration", `RUN_PUSHES`) in
    one commit, with its card rendered now for `repo_id` (from the run's records and the evaluation its card shows),
    so no pushed card names another repo or a placeholder. Returns `PushResult`."""
    from hubkit.cards.metadata import check_card
    from hubkit.cards.model import write_model_card
    from hubkit.hub import push_files
    from hubkit.run_record import check_finished

    run = Path(run_dir)
    check_finished(run)
    if files == "all":
        _ship_wheel(run)
    write_model_card(run, None, repo_id)
    _keep_space_link(run / "README.md", repo_id, token)
    return push_files(run, repo_id, "model", _MESSAGES[files], allow_patterns=[*RUN_PUSHES[files], *_picture(run)],
                      private=private, token=token, validate=lambda text: check_card(text, "model"))


def _keep_space_link(card: Path, repo_id: str, token: str | None) -> None:
    """The card rendered from the run folder keeps the line linking the demo Space that `hubkit space` added to the
    repo's card (the run folder does not know of the Space; the repo's card does)."""
    from hubkit.cards.space import linked_space, with_space_link
    from hubkit.hub import HubError, read_text_file

    try:
        linked = linked_space(read_text_file(repo_id, "README.md", token=token))
    except HubError:  # a new repo, or one without a card yet: nothing to keep
        return
    if linked:
        card.write_text(with_space_link(card.read_text(), *linked))


def push_localizer_folder(folder: str | os.PathLike, repo_id: str, private: bool = True, token: str | None = None):
    """Push a `hubkit localizer train` folder to its own model repo in one commit: the networks, their facts and
    errors, the out-of-fold points (a crops build of the same cohort cuts at them) and a card rendered for the repo;
    the example picture only for a synthetic cohort (it is a training image). Returns `PushResult`."""
    import json

    from hubkit.cards.localizer import render_localizer_card
    from hubkit.cards.metadata import check_card
    from hubkit.hub import push_files
    from hubkit.localizer import CONFIG_FILE, OOF_FILE, SHIPPED, picture_to_publish

    folder = Path(folder)
    config = json.loads((folder / CONFIG_FILE).read_text())
    picture = picture_to_publish(folder, config.get("trained_on", {}).get("synthetic", False))
    (folder / "README.md").write_text(render_localizer_card(config, repo_id, picture))
    return push_files(folder, repo_id, "model", "hubkit localizer train: the localiser",
                      allow_patterns=[*SHIPPED, OOF_FILE, "README.md", *([picture] if picture else [])],
                      private=private, token=token, validate=lambda text: check_card(text, "model"))


def _picture(run: Path) -> list[str]:
    """The localiser's picture, which the card shows, when the run was trained on a synthetic cohort: it is a
    training image, and RSNA imagery is never redistributed (the card then says where the picture stays)."""
    from hubkit.localizer import FOLDER, picture_to_publish
    from hubkit.run_record import read_run

    rec = read_run(run)
    picture = picture_to_publish(run / FOLDER, bool(rec is not None and rec.manifest.get("synthetic")))
    return [f"{FOLDER}/{picture}"] if picture else []


def _ship_wheel(run: Path) -> None:
    """Put this hubkit's wheel in the run folder: the card installs it from the repo (no package index has hubkit).
    A wheel that cannot be built leaves the card's install-from-source line instead, with a warning."""
    import logging

    from hubkit.packaging import wheel_name, wheel_of_this_hubkit

    for old in run.glob(wheel_name().split("-", 1)[0] + "-*.whl"):
        old.unlink()  # another version's wheel would be pushed beside this one
    try:
        wheel_of_this_hubkit(run)
    except RuntimeError as e:
        logging.getLogger("hubkit").warning("the card will install hubkit from its source: %s", e)
