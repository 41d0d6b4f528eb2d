"""What the Hub would reject in a card's YAML front matter, found offline before a push.

    >>> from hubkit.cards.metadata import card_problems, check_card
    >>> card_problems("---\\nlicense: mit\\npipeline_tag: image-text-to-text\\n---\\n# A card\\n", "model")
    []
    >>> card_problems("---\\nlicense: Apache-2.0\\n---\\n", "model")  # doctest: +ELLIPSIS
    ['"license" "Apache-2.0" is not a Hub license id (did you mean "apache-2.0"?): ...']
    >>> check_card("---\\nbase_model: ./my-base\\n---\\n", "model")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: README.md metadata: "base_model" with value "./my-base" is not valid. Use a model id from ...

The Hub checks README.md in every commit that touches it (huggingface_hub posts it to /api/validate-yaml first) and
refuses the whole commit on one bad field, after a run has already spent its time: checking here turns that into an
error before anything is uploaded. The vocabularies below are snapshots of the Hub's (each says where it comes from);
when the Hub grows a new id, add it here. The Hub's own validator keeps the last word.
"""

from __future__ import annotations

import enum
import functools
import json
import re
from typing import Any
from urllib.parse import urlsplit

# https://huggingface.co/docs/hub/repositories-licenses (hub-docs docs/hub/repositories-licenses.md, the table
# between its "region licenses" markers).
HUB_LICENSES = frozenset("""
apache-2.0 mit openrail bigscience-openrail-m creativeml-openrail-m bigscience-bloom-rail-1.0 bigcode-openrail-m
afl-3.0 artistic-2.0 bsl-1.0 bsd bsd-2-clause bsd-3-clause bsd-3-clause-clear c-uda cc cc0-1.0 cc-by-2.0 cc-by-2.5
cc-by-3.0 cc-by-4.0 cc-by-sa-3.0 cc-by-sa-4.0 cc-by-nc-2.0 cc-by-nc-3.0 cc-by-nc-4.0 cc-by-nd-4.0 cc-by-nc-nd-3.0
cc-by-nc-nd-4.0 cc-by-nc-sa-2.0 cc-by-nc-sa-3.0 cc-by-nc-sa-4.0 cdla-sharing-1.0 cdla-permissive-1.0
cdla-permissive-2.0 wtfpl ecl-2.0 epl-1.0 epl-2.0 etalab-2.0 eupl-1.1 eupl-1.2 agpl-3.0 gfdl gpl gpl-2.0 gpl-3.0 lgpl
lgpl-2.1 lgpl-3.0 isc h-research intel-research lppl-1.3c ms-pl apple-ascl apple-amlr mpl-2.0 odc-by odbl
openmdw-1.0 openmdw-1.1 openrail++ osl-3.0 postgresql ofl-1.1 ncsa unlicense zlib pddl lgpl-lr deepfloyd-if-license
fair-noncommercial-research-license llama2 llama3 llama3.1 llama3.2 llama3.3 llama4 grok2-community gemma unknown other
""".split())
# The Hub's task ids: huggingface.js packages/tasks/src/pipelines.ts (the keys of PIPELINE_DATA). A model's
# `pipeline_tag` and a dataset's `task_categories` both take them.
PIPELINE_TAGS = frozenset("""
text-classification token-classification table-question-answering question-answering zero-shot-classification
translation summarization feature-extraction text-generation fill-mask sentence-similarity text-to-speech
text-to-audio automatic-speech-recognition audio-to-audio audio-classification audio-text-to-text
voice-activity-detection depth-estimation image-classification object-detection image-segmentation text-to-image
image-to-text image-to-image image-to-video unconditional-image-generation video-classification
reinforcement-learning robotics tabular-classification tabular-regression tabular-to-text table-to-text
multiple-choice text-ranking text-retrieval time-series-forecasting text-to-video image-text-to-text
image-text-to-image image-text-to-video visual-question-answering document-question-answering
zero-shot-image-classification graph-ml mask-generation zero-shot-object-detection text-to-3d image-to-3d
image-feature-extraction video-text-to-text keypoint-detection visual-document-retrieval any-to-any video-to-video
other
""".split())
# "like my-license-1.0" (hub-docs modelcard.md): lowercase words joined by dashes, dots for versions.
LICENSE_NAME = re.compile(r"[a-z0-9]+(?:[-.][a-z0-9]+)*")
LICENSES_URL, TASKS_URL = "https://huggingface.co/docs/hub/repositories-licenses", "https://huggingface.co/tasks"
MISSING_METADATA = ("empty or missing yaml metadata in repo card "
                    "(https://huggingface.co/docs/hub/model-cards#model-card-metadata)")


class RepoType(str, enum.Enum):
    MODEL = "model"
    DATASET = "dataset"
    SPACE = "space"


class BaseModelRelation(str, enum.Enum):
    """How a model derives from its `base_model` (the Hub infers it when absent)."""

    ADAPTER = "adapter"
    MERGE = "merge"
    QUANTIZED = "quantized"
    FINETUNE = "finetune"


def _q(value: Any) -> str:
    """A value quoted on one line (newlines escaped, long values cut), for messages."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + '..."'


def _repo_type(repo_type: str) -> RepoType:
    try:
        return RepoType(repo_type)
    except ValueError:
        raise ValueError(f"repo_type must be one of {[t.value for t in RepoType]}, got {repo_type!r}") from None


def _front_matter(text: str) -> tuple[str, int] | None:
    """(YAML text, README line number of its first line), or None when the card has no front matter."""
    from huggingface_hub.repocard import REGEX_YAML_BLOCK  # the block exactly as the client splits it

    m = REGEX_YAML_BLOCK.search(text)
    return None if m is None else (m.group(2), len(re.findall(r"\r\n?|\n", m.group(1))) + 1)


def _load_yaml(text: str):
    """yaml.safe_load that also refuses duplicated keys, as the Hub's parser does (PyYAML keeps the last silently)."""
    import yaml

    class _Strict(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):
            seen = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=True)
                try:
                    if key in seen and key != "<<":
                        raise yaml.constructor.ConstructorError(None, None, f"duplicated mapping key {_q(key)}",
                                                                key_node.start_mark)
                    seen.add(key)
                except TypeError:  # an unhashable (complex) key: safe_load rejects it on its own
                    pass
            return super().construct_mapping(node, deep)

    return yaml.load(text, Loader=_Strict)  # noqa: S506 - a SafeLoader subclass


@functools.lru_cache(maxsize=1)
def dataset_size_categories() -> tuple[str, ...] | None:
    """datasets' own `size_categories` vocabulary in its order, or None when datasets (an optional dependency) is not
    installed."""
    import importlib.util

    if importlib.util.find_spec("datasets") is None:
        return None
    from importlib import resources

    path = resources.files("datasets.utils.resources").joinpath("size_categories.json")
    return tuple(json.loads(path.read_text()))


def _strings(value: Any) -> list[str] | None:
    """A string or a list of strings as a list; None for anything else."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    return None


def _is_repo_id(value: str) -> bool:
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(value)
    except ValueError:  # HFValidationError
        return False
    return True


def _license_problems(meta: dict, rtype: RepoType) -> list[str]:
    if "license" not in meta:
        return []
    ids = _strings(meta["license"])
    if ids is None or (rtype is not RepoType.DATASET and not isinstance(meta["license"], str)):
        kind = "a string or a list of strings" if rtype is RepoType.DATASET else "a string"
        return [f'"license" must be {kind}, a license id from {LICENSES_URL}']
    out = []
    for lic in ids:
        if lic not in HUB_LICENSES:
            hint = f' (did you mean "{lic.lower()}"?)' if lic.lower() in HUB_LICENSES else ""
            out.append(f'"license" {_q(lic)} is not a Hub license id{hint}: pick one from {LICENSES_URL}, '
                       f'or use "other" with license_name and license_link')
    if "other" in ids and not (rtype is RepoType.DATASET and meta.get("license_details")):
        name, link = meta.get("license_name"), meta.get("license_link")
        if name is None:
            out.append('"license: other" needs "license_name", a lowercase slug like my-license-1.0')
        elif not isinstance(name, str) or not LICENSE_NAME.fullmatch(name):
            out.append(f'"license_name" {_q(name)} must be a lowercase slug of letters, digits, dashes and dots, '
                       f'like my-license-1.0')
        if link is None:
            out.append('"license: other" needs "license_link": a URL, or the path of a file in the repo like LICENSE')
        elif not _is_link(link):
            out.append(f'"license_link" {_q(link)} must be an http(s) URL or the path of a file in the repo, '
                       f'like LICENSE')
    return out


def _is_link(link: Any) -> bool:
    if not isinstance(link, str) or not link.strip() or any(c.isspace() for c in link):
        return False
    url = urlsplit(link)
    if url.scheme:
        return url.scheme in ("http", "https") and bool(url.netloc)
    return not link.startswith("/") and ".." not in link.split("/")


def _model_problems(meta: dict) -> list[str]:
    out = []
    if "base_model" in meta:
        bases = _strings(meta["base_model"])
        if bases is None or not bases:
            out.append('"base_model" must be a model id or a list of model ids from https://hf.co/models')
        for base in bases or ():
            if not _is_repo_id(base):
                out.append(f'"base_model" with value {_q(base)} is not valid. '  # the Hub's own words
                           f'Use a model id from https://hf.co/models.')
    if "base_model_relation" in meta:
        rel = meta["base_model_relation"]
        if rel not in {r.value for r in BaseModelRelation}:
            out.append(f'"base_model_relation" {_q(rel)} must be one of '
                       f'{", ".join(r.value for r in BaseModelRelation)}')
        elif not meta.get("base_model"):
            out.append('"base_model_relation" needs "base_model", the model it relates to')
    if "pipeline_tag" in meta and meta["pipeline_tag"] not in PIPELINE_TAGS:
        out.append(f'"pipeline_tag" {_q(meta["pipeline_tag"])} is not a Hub task id: use one from {TASKS_URL} '
                   f'(e.g. image-text-to-text)')
    if "datasets" in meta:
        ids = meta["datasets"]
        if not isinstance(ids, list) or not all(isinstance(d, str) for d in ids):
            out.append('"datasets" must be a list of dataset ids (owner/name)')
        else:
            out += [f'"datasets" entry {_q(d)} is not a valid dataset id: use owner/name as on https://hf.co/datasets'
                    for d in ids if not _is_repo_id(d)]
    if "model-index" in meta:
        out += _model_index_problems(meta["model-index"])
    return out


_KIND_WORDS = {str: "a string", list: "a list", dict: "a mapping"}


def _model_index_problems(index: Any) -> list[str]:
    """The keys huggingface_hub's parser needs (model_index_to_eval_results) and the Hub's type rules, by path."""
    if not isinstance(index, list):
        return ['"model-index" must be a list of {name, results}']
    out = []

    def need(obj: Any, path: str, key: str, kind: type | None = str) -> Any:
        if not isinstance(obj, dict):  # missing or mistyped: its own line names it
            return None
        value = obj.get(key)
        if value is None:
            out.append(f'"{path}.{key}" is required')
        elif kind is not None and not isinstance(value, kind):
            out.append(f'"{path}.{key}" must be {_KIND_WORDS[kind]}')
            return None
        return value

    def mapping(obj: Any, path: str) -> Any:
        if not isinstance(obj, dict):
            out.append(f'"{path}" must be a mapping')
        return obj

    for i, elem in enumerate(index):
        p = f"model-index[{i}]"
        need(mapping(elem, p), p, "name")
        for j, res in enumerate(need(elem, p, "results", list) or []):
            r = f"{p}.results[{j}]"
            need(need(mapping(res, r), r, "task", dict), r + ".task", "type")
            ds = need(res, r, "dataset", dict)
            need(ds, r + ".dataset", "type")
            need(ds, r + ".dataset", "name")
            for key in ("config", "split", "revision"):
                if isinstance(ds, dict) and ds.get(key) is not None and not isinstance(ds[key], str):
                    out.append(f'"{r}.dataset.{key}" must be a string')
            metrics = need(res, r, "metrics", list)
            if metrics == []:
                out.append(f'"{r}.metrics" must list at least one {{type, value}}')
            for k, metric in enumerate(metrics or []):
                m = f"{r}.metrics[{k}]"
                need(mapping(metric, m), m, "type")
                need(metric, m, "value", None)
                if isinstance(metric, dict) and not isinstance(metric.get("verified", False), bool):
                    out.append(f'"{m}.verified" must be true or false')
    if not out:  # what the client itself parses (it raises on what the paths above did not name)
        from huggingface_hub.repocard_data import model_index_to_eval_results

        try:
            model_index_to_eval_results(index)
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            why = f"{type(e).__name__}: {e}".replace("\n", " ")
            out.append(f'"model-index" cannot be parsed by huggingface_hub ({why})')
    return out


def _dataset_problems(meta: dict) -> list[str]:
    out = []
    if "size_categories" in meta and (vocab := dataset_size_categories()) is not None:
        sizes = _strings(meta["size_categories"])
        for s in sizes if sizes is not None else [meta["size_categories"]]:
            if s not in vocab:
                out.append(f'"size_categories" {_q(s)} is not one of datasets\' values: '
                           f'{", ".join(vocab)}')
    if "task_categories" in meta:
        tasks = _strings(meta["task_categories"])
        if tasks is None:
            out.append('"task_categories" must be a list of task ids')
        out += [f'"task_categories" {_q(t)} is not a Hub task id: use one from {TASKS_URL} (e.g. image-text-to-text)'
                for t in tasks or () if t not in PIPELINE_TAGS]
    return out


def _space_problems(meta: dict) -> list[str]:
    """What the Hub's Spaces configuration refuses (hub-docs spaces-config-reference.md)."""
    from hubkit.cards.space import COLORS, SHORT_DESCRIPTION_MAX

    out = []
    if meta.get("sdk") not in ("gradio", "docker", "static"):
        out.append(f'"sdk" {_q(meta.get("sdk"))} must be gradio, docker or static')
    if meta.get("sdk") == "gradio" and not re.fullmatch(r"\d+(\.\d+){0,2}", str(meta.get("sdk_version") or "")):
        out.append(f'"sdk_version" {_q(meta.get("sdk_version"))} must be the Gradio version, like 6.31.0')
    if "app_file" in meta and not (isinstance(meta["app_file"], str) and meta["app_file"].endswith(".py")):
        out.append(f'"app_file" {_q(meta["app_file"])} must be the path of a Python file in the repo')
    out += [f'"{k}" {_q(meta[k])} must be one of {", ".join(COLORS)}' for k in ("colorFrom", "colorTo")
            if k in meta and meta[k] not in COLORS]
    if len(str(meta.get("short_description") or "")) > SHORT_DESCRIPTION_MAX:
        out.append(f'"short_description" must be at most {SHORT_DESCRIPTION_MAX} characters')
    if "models" in meta and not all(isinstance(m, str) and _is_repo_id(m) for m in _strings(meta["models"]) or [0]):
        out.append('"models" must be a list of model repo ids (OWNER/NAME)')
    return out


def card_problems(text: str, repo_type: str) -> list[str]:
    """One line per problem the Hub would reject in README.md's YAML front matter; [] when there is none.

    Args:
        text: the README.md text.
        repo_type: "model", "dataset" or "space" (the rules differ: `license` may be a list only for datasets).

    A card without front matter has no problem here (the Hub only warns: see `card_warnings`).
    """
    rtype = _repo_type(repo_type)
    block = _front_matter(text)
    if block is None or not block[0].strip():
        return []
    import yaml

    try:
        meta = _load_yaml(block[0])
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        where = f" at README.md line {block[1] + mark.line}" if mark is not None else ""
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        return [f"front matter is not valid YAML ({what}{where}): fix the YAML between the --- lines"]
    if meta is None:
        return []
    if not isinstance(meta, dict):
        return [f'front matter must be a YAML mapping of "key: value" lines, not a {type(meta).__name__}']
    out = _license_problems(meta, rtype)
    if rtype is RepoType.DATASET:
        out += _dataset_problems(meta)
    if rtype is RepoType.SPACE:
        out += _space_problems(meta)
    if "tags" in meta and not (isinstance(meta["tags"], list) and all(isinstance(t, str) for t in meta["tags"])):
        out.append('"tags" must be a list of strings')
    return out + _model_problems(meta)


def card_warnings(text: str, repo_type: str) -> list[str]:
    """What the Hub accepts but warns about: a card without metadata."""
    _repo_type(repo_type)
    block = _front_matter(text)
    return [MISSING_METADATA] if block is None or not block[0].strip() else []


def check_card(text: str, repo_type: str) -> None:
    """Raise ValueError("README.md metadata: ...") naming every problem `card_problems` finds."""
    if problems := card_problems(text, repo_type):
        raise ValueError("README.md metadata: " + "; ".join(problems))
