"""hubkit: raw DICOM -> Hugging Face dataset -> QLoRA fine-tune -> evaluated, carded adapter -> pipeline()."""

__version__ = "0.1.0"
