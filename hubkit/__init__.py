"""hubkit: raw DICOM -> Hugging Face dataset -> QLoRA fine-tune -> evaluated, carded adapter -> pipeline()."""

__version__ = "0.1.0"

# `pipeline("lumbar-classify", ...)` works after `import hubkit`: the task registers itself when transformers'
# pipelines module is first imported (importing transformers here would make `hubkit --help` take seconds).
from hubkit.inference.registration import install_lazy_registration as _lazy_pipeline  # noqa: E402

_lazy_pipeline()
