"""The consumer's room: `pipeline("lumbar-classify", model=repo)` and what it runs, and `hubkit predict`; never
imports `hubkit.training` or `hubkit.evaluation`.

registration (the lazy task registration `import hubkit` does) · pipeline (the transformers Pipeline) · loading (base
+ adapter) · inputs (folders, images, rows -> studies) · studies (StudyInput / StudyPrediction, the processor call)
· decoding (schema-constrained decoder) · answer_plan (how the answer is tokenized and fed) · batching (the prefetch
loop) · generate (the seed's free generation, for comparison) · calibration (calibration.json, read and applied) ·
submission (the competition's CSV) · predict (a test folder -> that CSV, resumable, over N processes).
"""
