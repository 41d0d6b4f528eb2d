"""Stand-ins for development, the demo and the tests; the product never imports this room.

local_hub (a loopback Hub-compatible server) · synth (a synthetic RSNA-layout DICOM cohort whose labels are visible
in the pixels) · base_models (a tiny random Gemma 3 VLM, and random weights with MedGemma 1.5 4B's geometry) · demo
(`make demo`: the whole workflow offline). Real users have huggingface.co, RSNA data and the real base model instead.
"""
