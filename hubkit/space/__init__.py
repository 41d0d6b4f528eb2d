"""`hubkit space`: a Gradio demo Space for a model, where a radiologist can look instead of read.

- `app`: the app itself (upload a zipped DICOM study → the 25 grades with probabilities, the images the model was
  given, the levels' points, the notes), run by the Space's `app.py` and by `python -m hubkit.space.app`.
- `writer`: writes the Space's files (app.py, requirements.txt, README.md, this hubkit's wheel) and pushes them as
  a Space repo, private unless asked.
"""

from hubkit.run_record import WHEEL_PATTERN

APP_FILE = "app.py"
REQUIREMENTS_FILE = "requirements.txt"
# Everything a Space repo holds: no weights (the app loads the model repo) and no token (a Space secret holds it).
SPACE_FILES = (APP_FILE, REQUIREMENTS_FILE, "README.md", WHEEL_PATTERN)
