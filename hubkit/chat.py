"""The one place that turns a study (images, views, prompt[, target]) into chat messages.

Training (`hubkit.train`) and inference (the pipeline) both call `build_chat_row`, so the model always sees the same
layout:

    user:  "<view 1>" <image 1> "<view 2>" <image 2> ... "<view N>" <image N> "<prompt>"
    model: "<target>"                                                     (training only)

Why a text label before each image: with several images in one prompt the model has to know which slice it is
looking at (the sagittal T2 carries the canal grades, the T1s the foramina, each axial one level). A short label in
front of each image says it explicitly instead of leaving it to the image's position, which a tiny Gemma 3 needs to
learn the 25-field task at all. It is also how Google's official multi-slice MedGemma notebook
lays slices out (an image then "SLICE n"), with the label before the image here so the model reads it first. The
prompt text is the dataset's `prompt` column, i.e. the seed's exact prompt (`schema.build_prompt(views)`), last.

Rows have TRL's conversational prompt-completion shape: `{"images", "prompt": [user turn], "completion":
[assistant turn]}`; image content blocks are placeholders filled from `images` in order, which is what both TRL's
`DataCollatorForVisionLanguageModeling` and Unsloth's `UnslothVisionDataCollator` expect.

Inference:

    row = build_chat_row(images, views, prompt)
    text = processor.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
    inputs = processor(text=[text], images=[row["images"]], add_special_tokens=False, return_tensors="pt")
"""

from __future__ import annotations

from typing import Any, Sequence

def build_chat_row(
    images: Sequence[Any], views: Sequence[str], prompt: str, target: str | None = None
) -> dict[str, Any]:
    """Build the chat row for one study, identically for training and inference.

    Args:
        images: the study's images (PIL images, or anything the processor accepts), one per view.
        views: one description per image, e.g. "Sagittal T2", "Axial T2 L4/L5".
        prompt: the instruction text (the dataset's `prompt` column = `schema.build_prompt(views)`).
        target: the compact answer JSON; given for training rows, None at inference.

    Returns:
        `{"images": [...], "prompt": [user message]}` plus `"completion": [assistant message]` when `target` is
        given. The user content is `[text view_1, image, text view_2, image, ..., text prompt]`.

    Raises:
        ValueError: if the numbers of images and views differ, or there are no images.
    """
    images = list(images)
    views = list(views)
    if len(images) != len(views):
        raise ValueError(f"got {len(images)} images but {len(views)} views; each image needs one view label")
    if not images:
        raise ValueError("a study needs at least one image")
    content: list[dict[str, Any]] = []
    for view in views:
        content.append({"type": "text", "text": view})
        content.append({"type": "image"})
    content.append({"type": "text", "text": prompt})
    row: dict[str, Any] = {"images": images, "prompt": [{"role": "user", "content": content}]}
    if target is not None:
        row["completion"] = [{"role": "assistant", "content": [{"type": "text", "text": target}]}]
    return row
