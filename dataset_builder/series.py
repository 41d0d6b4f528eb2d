"""The one series classifier: which RSNA series type (if any) a DICOM series is, in any vendor's words.

Used by the slice picker for the builder and the pipeline alike. A series' plane comes from its geometry
(ImageOrientationPatient); its weighting (T1 / T2 / STIR) from its description, read as tokens so that Siemens
(`t2_tse_tra_384`), GE (`AX T2 FRFSE`, `OSag STIR`), Philips (`T2W_TSE SAG`, `sT1W_TSE`), Canon (`T2WI_SAG`) and RSNA's own
(`Sagittal T2/STIR`) all read the same; where the description is missing or says nothing, from RepetitionTime,
EchoTime and InversionTime. A series that is none of the three (localizer, diffusion, gradient echo, FLAIR, PD, a
Dixon fat image) gets no kind, and the reason says why.

    >>> classify("t2_tse_tra_384", Plane.AXIAL).kind
    <SeriesKind.AX_T2: 'Axial T2'>
    >>> classify("", Plane.SAGITTAL, tr=3500, te=100).kind
    <SeriesKind.SAG_T2: 'Sagittal T2/STIR'>
"""

from __future__ import annotations

import dataclasses
import re

from hubkit.schema import SeriesKind

from .dicom import Plane, Series

# Echo/repetition/inversion windows (ms) that tell the weighting when the description does not. T1: short TR and
# TE; T2: long TR and TE; STIR: an inversion that nulls fat (~150 ms at 1.5 T, ~220 at 3 T); an inversion near
# 800 ms with a short TE is a T1-FLAIR (still a T1); a long inversion with a long TE is a T2-FLAIR (CSF dark: not
# what the canal slots need). Between the windows the series is left unknown rather than guessed.
T1_MAX_TR, T1_MAX_TE = 1300.0, 30.0
T2_MIN_TR, T2_MIN_TE = 1800.0, 60.0
STIR_TI, T1_IR_TI, FLAIR_MIN_TI = (80.0, 300.0), (500.0, 1400.0), 1500.0

_T1 = {"t1", "t1w", "t1wi", "tiwi"}
_T2 = {"t2", "t2w", "t2wi"}
_STIR = {"stir", "estir", "tirm", "irfse", "fir", "fstir"}
_FLAIR = {"flair", "darkfluid"}
_PD = {"pd", "pdw", "pdwi"}
_T2_TECHNIQUE = {"frfse", "space", "spc", "cube", "vista", "drive"}  # T2 sequences, when no weighting is named
_REJECT = {  # token -> why the series is none of the three kinds
    **dict.fromkeys(("loc", "localiz", "localis", "scout", "survey", "scano", "3plane", "3pl", "tripilot",
                     "cal", "calibration", "shim"), "a localizer or calibration scan"),
    **dict.fromkeys(("dwi", "diff", "diffusion", "adc", "trace", "tracew", "ep2d", "dti"), "diffusion-weighted"),
    **dict.fromkeys(("t2star", "medic", "merge", "ffe", "fl2d", "fl3d", "gre", "fgre", "spgr", "vibe", "lava",
                     "thrive", "bffe", "fiesta", "trufi", "swi", "swan", "me2d", "mprage", "mpr"), "gradient echo"),
    **dict.fromkeys(("myelo", "myelogram", "mrm"), "a myelogram"),
}
_PLANE_WORDS = {Plane.SAGITTAL: {"sag", "sagittal", "osag", "sg"},
                Plane.AXIAL: {"ax", "axi", "axial", "oax", "tra", "trans", "transverse", "trs"},
                Plane.CORONAL: {"cor", "coronal", "ocor"}}
_RSNA = {k.value.lower(): k for k in SeriesKind}


@dataclasses.dataclass(frozen=True)
class SeriesClass:
    kind: SeriesKind | None  # None: not one of the three RSNA series types
    plane: Plane | None
    weighting: str | None  # "T1" | "T2" | "STIR" | None
    reason: str  # one line: how it was decided, or why it was rejected


def tokens(description: str) -> list[str]:
    """Lower-case word tokens of a description, with vendors' glued forms split (`sT2W_TSE` -> s t2w tse)."""
    s = (description or "").lower()
    s = s.replace("t2*", " t2star ").replace("dark-fluid", " darkfluid ").replace("3-plane", "3plane")
    s = re.sub(r"(?<![a-z0-9])[ctls]\d{1,2}\s*(?:-|/|to)\s*[ctls]?\d{1,2}(?![a-z0-9])", " ", s)  # T11-S1: anatomy
    s = re.sub(r"[^a-z0-9+]+", " ", s)
    s = re.sub(r"(?<![a-z])(fs|sag|osag|ax|oax|cor|tra|[esd])(t[12]|stir)", r"\1 \2", s)  # FST2, sT2W, eSTIR
    s = re.sub(r"(t[12]w?i?)(tse|fse|frfse|sag|ax|tra|cor|stir|flair|fs)", r"\1 \2", s)  # T2TSE, T2SAG
    s = re.sub(r"(stir|fse|tse|se)([23]d)(?![a-z0-9])", r"\1 \2", s)  # STIR2D
    s = re.sub(r"(?<![a-z])(sag|tra|cor|ax)(ch|c)(?![a-z0-9])", r"\1", s)  # T2WI_SAGc
    return [next((r for r in ("scout", "localiz", "localis", "survey") if t.startswith(r)), t) for t in s.split()]


def plane_from_words(toks: list[str]) -> Plane | None:
    """The plane a description names (only used when the series has no geometry)."""
    named = [p for p, words in _PLANE_WORDS.items() if words & set(toks)]
    return named[0] if len(named) == 1 else None


def weighting_from_times(tr: float | None, te: float | None, ti: float | None) -> tuple[str | None, str]:
    """(weighting or None, reason) from RepetitionTime / EchoTime / InversionTime in ms (a TI of 0 = none)."""
    if ti:
        if STIR_TI[0] <= ti <= STIR_TI[1] and (tr is None or tr >= 1500):
            return "STIR", f"inversion time {ti:g} ms nulls fat"
        if T1_IR_TI[0] <= ti <= T1_IR_TI[1] and (te is None or te < 40):
            return "T1", f"inversion time {ti:g} ms with a short echo (T1-FLAIR)"
        if ti >= FLAIR_MIN_TI:
            return None, f"inversion time {ti:g} ms: a T2-FLAIR"
        return None, f"inversion time {ti:g} ms in no known window"
    if tr is None or te is None:
        return None, "no repetition/echo time in the header"
    if tr <= T1_MAX_TR and te <= T1_MAX_TE:
        return "T1", f"short TR/TE {tr:g}/{te:g} ms"
    if tr >= T2_MIN_TR and te >= T2_MIN_TE:
        return "T2", f"long TR/TE {tr:g}/{te:g} ms"
    return None, f"TR/TE {tr:g}/{te:g} ms in no window (proton density? a STIR without its inversion time?)"


def weighting_from_words(toks: list[str], te: float | None) -> tuple[str | None, str, bool]:
    """(weighting or None, reason, decisive): decisive=False means the words say nothing either way."""
    t = set(toks)
    if t & _FLAIR or ("tirm" in t and "darkfluid" in t):
        if t & _T1 or (te is not None and te < 40 and not t & _T2):
            return "T1", "a T1-FLAIR", True
        return None, "a T2-FLAIR (CSF dark)", True
    if t & _STIR:
        return ("T1", "an inversion-recovery T1", True) if "tirm" in t and t & _T1 else ("STIR", "STIR", True)
    if t & _PD and not t & (_T1 | _T2):
        return None, "proton density", True
    if bool(t & _T1) != bool(t & _T2):
        return ("T1", "named T1", True) if t & _T1 else ("T2", "named T2", True)
    if not t & (_T1 | _T2) and t & _T2_TECHNIQUE:
        return "T2", f"a T2 sequence ({sorted(t & _T2_TECHNIQUE)[0]})", False
    return None, "no weighting named", False


def _kind(plane: Plane | None, weighting: str | None) -> SeriesKind | None:
    if plane is Plane.SAGITTAL:
        return {"T1": SeriesKind.SAG_T1, "T2": SeriesKind.SAG_T2, "STIR": SeriesKind.SAG_T2}.get(weighting or "")
    if plane is Plane.AXIAL and weighting == "T2":
        return SeriesKind.AX_T2
    return None


def classify(description: str, plane: Plane | None, tr: float | None = None, te: float | None = None,
             ti: float | None = None, image_type: tuple[str, ...] = ()) -> SeriesClass:
    """The RSNA series type of one series from its description, plane (geometry) and times.

    An RSNA label (`Sagittal T1`, `Sagittal T2/STIR`, `Axial T2`, as in train_series_descriptions.csv) is taken as
    is. Otherwise the plane is the geometry's (the description's words only without geometry), and the weighting
    the description's unless the times clearly say another (a technologist renames protocols; the scanner writes
    the times it used); T2 and STIR share the sagittal slot, so the words decide between those two.
    """
    exact = _RSNA.get(" ".join((description or "").lower().split()))
    if exact is not None:
        return SeriesClass(exact, plane, None, f"RSNA series type {exact.value!r}")
    toks = tokens(description)
    kinds = {str(v).upper() for v in image_type}
    rejected = next((why for t in toks if (why := _REJECT.get(t))), None)
    if "LOCALIZER" in kinds:
        rejected = "a localizer (ImageType)"
    if not rejected and (kinds & {"FAT", "OPP_PHASE", "OUT_PHASE"} or (toks and toks[0] == "fat")
                         or (("dixon" in toks or "flex" in toks) and toks[-1:] in (["f"], ["opp"]))):
        rejected = "a Dixon fat or opposed-phase image"
    plane = plane or plane_from_words(toks)
    if rejected:
        return SeriesClass(None, plane, None, f"{description!r}: {rejected}")
    said, why_said, decisive = weighting_from_words(toks, te)
    timed, why_timed = weighting_from_times(tr, te, ti)
    if decisive and said is None:
        weighting, why = None, why_said
    elif said and timed and said != timed and {said, timed} != {"T2", "STIR"}:
        weighting, why = timed, f"{why_timed} (the description says {said})"
    elif said:
        weighting, why = said, why_said
    else:
        weighting, why = timed, why_timed
    kind = _kind(plane, weighting)
    where = plane.value if plane else "no plane"
    reason = f"{description!r}: {why}, {where}" if kind else f"{description!r}: {why}, {where}: not an RSNA series type"
    return SeriesClass(kind, plane, weighting, reason)


def classify_series(series: Series) -> SeriesClass:
    """`classify` for a `dicom.Series`: its description (the CSV's, else its own), its first readable slice's plane,
    times and ImageType. An RSNA label is taken without reading any header."""
    known = classify(series._description or "", None) if series._description else None
    if known is not None and known.kind is not None:
        return known
    first = series.first
    if first is None:
        return SeriesClass(None, None, None, f"series {series.series_id}: no readable DICOM header")
    return classify(series.description, first.plane, *first.times, first.image_type)
