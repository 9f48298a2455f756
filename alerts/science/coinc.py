"""Read what a compact-binary (CBC) search pipeline uploads.

A CBC pipeline describes a candidate with a LIGO-LW XML document
(``coinc.xml``): one ``coinc_inspiral`` row for the network candidate and
one ``sngl_inspiral`` row per detector trigger, tied together by the
``coinc_event_map`` table.  The noise power spectral densities (PSDs) come
in the same document or, more often, in a separate ``psd.xml.gz``.

This module turns those bytes into plain Python values and turns every kind
of malformed upload into one exception with a one-line reason, because the
bytes come from outside and the caller must be able to log and reject them
without a parser traceback.
"""

from __future__ import annotations

import functools
import gzip
import io
import math
import xml.sax
import zlib
from dataclasses import asdict, dataclass, field

import lal
import lal.series
from igwn_ligolw import ligolw, lsctables
from igwn_ligolw import types as ligolw_types
from igwn_ligolw import utils as ligolw_utils
from ligo.skymap.util import ilwd

__all__ = (
    "CoincError",
    "CoincSummary",
    "PsdError",
    "chirp_mass",
    "parse_coinc",
    "parse_psd",
)

#: First two bytes of every gzip stream (RFC 1952).
GZIP_MAGIC = b"\x1f\x8b"

#: ``process_params`` options that pipelines use for the template
#: low-frequency cutoff, spelled without leading dashes and with "-" for "_".
#: ``f-low``: ligo.skymap tools (bayestar-realize-coincs); ``flow``/``fmin``:
#: gstlal and MBTA; ``low-frequency-cutoff``: PyCBC.
F_LOW_PARAM_NAMES = frozenset(
    {"f-low", "flow", "f-min", "fmin", "low-frequency-cutoff"}
)

#: What error messages call a coinc.xml upload.
_COINC_FILE = "coinc file"

#: Name of the ``LIGO_LW`` element that carries one frequency series, as
#: written by ``lal.series.make_psd_xmldoc``.
FREQUENCY_SERIES_ELEMENT_NAME = "REAL8FrequencySeries"

#: Exceptions that igwn-ligolw, expat, gzip and lal raise for damaged input.
#: igwn-ligolw reports foreign elements as ElementError and bad cell values
#: as ValueError, TypeError or KeyError; expat reports syntax errors as
#: SAXException.  lal's SWIG bindings raise RuntimeError ("XLAL Error"), and
#: so does igwn-ligolw for an Array stream whose bytes do not fit its Type:
#: a damaged <Time> element, SNR-series Array or PSD unit.
#: The Type of legacy row-ID columns and Params (also ``ilwd:char_u``).
_LEGACY_ID_TYPE = b"ilwd:char"

_PARSE_FAILURES = (
    ligolw.ElementError,
    xml.sax.SAXException,
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    AttributeError,
    UnicodeError,
    EOFError,
    OSError,
    zlib.error,
    RuntimeError,
)


class CoincError(ValueError):
    """A ``coinc.xml`` upload that cannot be used; the message says why."""


class PsdError(ValueError):
    """A ``psd.xml(.gz)`` upload that cannot be used; the message says why."""


@ilwd.use_in
class _ContentHandler(ligolw.LIGOLWContentHandler):
    """Content handler that also reads legacy ``ilwd:char`` row IDs.

    Uploads written before igwn-ligolw switched to integer IDs (e.g. gstlal
    in O1-O3) still circulate; ligo.skymap's adapter converts them on the fly.
    """


# --- a quicker load of the same document ------------------------------------
#
# igwn-ligolw (2.1) spends three quarters of a coinc.xml load on bookkeeping,
# not on the data: every Column appended to a Table re-derives the whole
# column list to look for duplicates (quadratic in the ~60-100 sngl_inspiral
# columns), every element's constructor lists its class's valid attributes
# with dir(), every read of a Table's or Column's .Name runs a regular
# expression, and every tree walk (columnnames, get_table) recurses into each
# Column and copies lists.  The loader below builds the same tree from the
# same elements, with the same checks and error messages (tests/science/
# test_coinc.py compares it with the stock loader), through private
# subclasses that only avoid that repeated work.  They are made per element
# class and never registered in Table.TableByName, so other users of
# igwn-ligolw in the process (ligo.skymap, lal.series) are unaffected; the
# documents they make are read here and never leave this module.

_VALID_ATTRIBUTES: dict[type, frozenset] = {}
_QUICK_CLASSES: dict[type, type] = {}

#: Elements whose ``Name`` attribute ligolw decodes with a name class, as
#: ``Name = attributeproxy("Name", enc=Codec.enc, dec=Codec)``.
_NAME_CODECS = ((ligolw.Table, "TableName"), (ligolw.Column, "ColumnName"))

#: Distinct names remembered per element class (real documents use a few
#: hundred column names; the bound keeps hostile uploads from growing it).
_NAME_CACHE_SIZE = 4096


class _QuickElement:
    """Mixin: valid attribute names computed once, a flatter tree walk."""

    @classmethod
    def validattributes(cls):
        try:
            return _VALID_ATTRIBUTES[cls]
        except KeyError:
            names = _VALID_ATTRIBUTES[cls] = super().validattributes()
            return names

    def getElements(self, filter):
        # Element.getElements' result, in its order (each child's subtree,
        # then this element), without a call and two list copies per leaf:
        # Table.columnnames & co. and get_table() walk every Column of a
        # table, several times per load.
        elements = []
        for child in self.childNodes:
            if child.childNodes:
                elements.extend(child.getElements(filter))
            elif filter(child):
                elements.append(child)
        if filter(self):
            elements.append(self)
        return elements


class _QuickTable(_QuickElement):
    """Mixin for Table classes: O(1) checks of each Column the parser appends.

    ``ligolw.Table._verifyChildren`` checks, after every append, the order of
    the children, the new Column's name and type against ``validcolumns``,
    and that no two Columns share a name (rebuilding the name list each
    time).  Here the names seen so far are remembered, so appending Column
    ``n + 1`` to ``n`` already verified children checks only the new one,
    with the stock messages.  Anything else (the first Column, Comments,
    the Stream, inserts, a verified prefix that changed) runs the stock
    check and re-derives the remembered names from scratch.  (Renaming a
    Column after appending it would go unnoticed; the parser never does.)
    """

    #: Keep this private class: Table.__new__ would otherwise substitute the
    #: class registered under the table's name.
    TableByName: dict = {}

    def _verifyChildren(self, i):
        children = self.childNodes
        child = children[i]
        verified = self.__dict__.get("_verified_columns")
        if (
            verified is None
            or child.tagName != ligolw.Column.tagName
            or i != len(children) - 1
            or i != verified[0]
            # The previous sibling may have grown children (of its own) since
            # it was verified, and the stock check would count nested
            # Columns; after a Stream it reports the misplaced Column.
            or (
                i > 0
                and (
                    bool(children[i - 1].childNodes)
                    or children[i - 1].tagName
                    not in (ligolw.Column.tagName, ligolw.Comment.tagName)
                )
            )
        ):
            super()._verifyChildren(i)
            self._verified_columns = (
                (len(children), set(self.columnnames))
                if child.tagName == ligolw.Column.tagName
                else None
            )
            return
        # The stock checks for the new Column, in the stock order (which
        # matters for a Column missing its Name or Type attribute); each
        # attribute is decoded once (ligolw decodes it on every read).
        validcolumns = self.validcolumns
        if validcolumns is not None:
            name = child.Name
            if name in validcolumns:
                expected_type = validcolumns[name]
            elif child.getAttribute("Name") in validcolumns:
                expected_type = validcolumns[child.getAttribute("Name")]
            else:
                raise ligolw.ElementError(
                    "invalid Column '%s' for Table '%s'" % (name, self.Name)
                )
            column_type = child.Type
            if expected_type != column_type:
                raise ligolw.ElementError(
                    "invalid type '%s' for Column '%s' in Table '%s', "
                    "expected type '%s'"
                    % (column_type, name, self.Name, expected_type)
                )
        else:
            column_type = child.Type
        if column_type not in ligolw_types.ToPyType:
            raise ligolw.ElementError(
                "unrecognized Type '%s' for Column '%s' in Table '%s'"
                % (column_type, child.Name, self.Name)
            )
        names = verified[1]
        name = child.Name
        if name in names:
            raise ligolw.ElementError(
                "duplicate Column '%s' in Table '%s'" % (name, self.Name)
            )
        names.add(name)
        self._verified_columns = (len(children), names)


def _quick(cls: type) -> type:
    """The private quick-loading subclass of an igwn-ligolw element class."""
    try:
        return _QUICK_CLASSES[cls]
    except KeyError:
        pass
    # The public class's name, so that messages naming the class (e.g.
    # "<class '...SnglInspiralTable'> does not hold text") read the same.
    namespace = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
    if issubclass(cls, (ligolw.Table, ligolw.Array)):
        # Table and Array elements make their Stream child from cls.Stream.
        namespace["Stream"] = _quick(cls.Stream)
    for element_class, codec_name in _NAME_CODECS:
        if issubclass(cls, element_class):
            # ligolw's own declaration of .Name, with the decoding (a regular
            # expression match per access, a pure function of the attribute's
            # text) memoized: columnnames and friends decode every Column's
            # Name several times per table.
            codec = getattr(cls, codec_name)
            namespace["Name"] = ligolw.attributeproxy(
                "Name",
                enc=codec.enc,
                dec=functools.lru_cache(maxsize=_NAME_CACHE_SIZE)(codec),
            )
    mixin = _QuickTable if issubclass(cls, ligolw.Table) else _QuickElement
    quick = _QUICK_CLASSES[cls] = type(cls.__name__, (mixin, cls), namespace)
    return quick


class _QuickContentHandler(ligolw.LIGOLWContentHandler):
    """`_ContentHandler`'s tree, built through `_quick` classes.

    Load with `_quick_content_handler`, which adds ligo.skymap's legacy-ID
    adapter per document.
    """

    def startArray(self, parent, attrs):
        return _quick(ligolw.Array)(attrs)

    def startColumn(self, parent, attrs):
        return _quick(ligolw.Column)(attrs)

    def startComment(self, parent, attrs):
        return _quick(ligolw.Comment)(attrs)

    def startDim(self, parent, attrs):
        return _quick(ligolw.Dim)(attrs)

    def startLIGO_LW(self, parent, attrs):
        return _quick(ligolw.LIGO_LW)(attrs)

    def startParam(self, parent, attrs):
        return _quick(ligolw.Param)(attrs)

    def startTable(self, parent, attrs):
        # What Table.__new__ would pick: the class registered for the name
        # (lsctables registers its tables on import), else a plain Table.
        name = ligolw.Table.TableName(attrs["Name"])
        return _quick(ligolw.Table.TableByName.get(name, ligolw.Table))(attrs)

    def startTime(self, parent, attrs):
        return _quick(ligolw.Time)(attrs)


def _quick_content_handler(document):
    """A `_QuickContentHandler` with the legacy-ID adapter, for one document.

    ``ilwd.use_in`` remembers, in a dict shared by every document its class
    loads, the legacy ``ilwd:char`` columns whose conversion waits for their
    table's Stream, keyed by the table's ``id()``.  A document that fails in
    between leaves its entries behind, and a later document whose table
    reuses that id() then has valid integer IDs rejected as "not formatted
    like an ilwd".  A class per document keeps every load independent of
    what was loaded before (the cost is some 25 us per document).
    """
    handler_class = ilwd.use_in(
        type("_QuickContentHandler", (_QuickContentHandler,), {})
    )
    return handler_class(document)


@dataclass(frozen=True)
class CoincSummary:
    """What the orchestrator needs from one CBC candidate.

    ``gpstime`` is the float network time; ``gps_seconds`` and
    ``gps_nanoseconds`` hold it exactly (a float64 near 1e9 s resolves only
    ~0.1 us).  ``far`` is in Hz.  ``instruments`` is sorted.
    ``detector_snrs`` maps detector name to its trigger SNR.  Masses are in
    solar masses (detector frame, as the template bank has them), spins are
    dimensionless aligned components.  ``f_low`` (Hz) is None when the
    pipeline did not record it; ``likelihood`` is the pipeline's ranking
    statistic from ``coinc_event.likelihood`` or None.  ``has_psd`` tells
    whether the document itself carries noise spectra.  ``program`` is the
    name of the process that made the coincidence.
    """

    gpstime: float
    gps_seconds: int
    gps_nanoseconds: int
    far: float
    snr: float
    instruments: tuple[str, ...]
    detector_snrs: dict[str, float] = field(hash=False)
    mass1: float
    mass2: float
    spin1z: float
    spin2z: float
    chirp_mass: float
    f_low: float | None
    likelihood: float | None
    has_psd: bool
    program: str | None

    def as_dict(self) -> dict:
        """Plain JSON-serializable values (lists instead of tuples)."""
        values = asdict(self)
        values["instruments"] = list(self.instruments)
        return values


def chirp_mass(mass1: float, mass2: float) -> float:
    """The mass combination that sets the inspiral phase evolution."""
    total = mass1 + mass2
    return (mass1 * mass2) ** 0.6 / total**0.2


def _cell(row, column: str):
    """A row's value, or None when the document lacks that column."""
    return getattr(row, column, None)


def _load_document(data: bytes, error: type[ValueError], what: str):
    """Parse (possibly gzipped) LIGO-LW bytes, raising ``error`` on failure.

    The whole document is loaded and checked, as igwn-ligolw's stock loader
    with `_ContentHandler` would, through `_quick_content_handler`. A
    document without legacy ``ilwd:char`` IDs (every current pipeline's) is
    first loaded without ligo.skymap's adapter for them, whose per-Column
    and per-Stream work (about a tenth of the load) only legacy documents
    need; if that load fails, the adapter's load decides, so that what is
    accepted and the error messages stay the stock ones.
    """
    if not data:
        raise error(f"{what} is empty")
    if data[: len(GZIP_MAGIC)] == GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise error(f"{what} is not a valid gzip stream: {exc}") from exc
        if not data:
            raise error(f"{what} is empty after gzip decompression")
    try:
        if _LEGACY_ID_TYPE not in data:
            try:
                return _load_with(data, _QuickContentHandler)
            except _PARSE_FAILURES:
                pass  # the stock result and message: load again with the adapter
        xmldoc = _load_with(data, _quick_content_handler)
    except _PARSE_FAILURES as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise error(f"{what} is not a LIGO-LW XML document: {reason}") from exc
    return xmldoc


def _load_with(data: bytes, contenthandler):
    xmldoc = ligolw_utils.load_fileobj(
        io.BytesIO(data), compress=False, contenthandler=contenthandler
    )
    xmldoc.ensure_llw_at_toplevel()
    return xmldoc


def _single_table(xmldoc, table_class, error: type[ValueError], what: str):
    try:
        return table_class.get_table(xmldoc)
    except ValueError as exc:
        raise error(f"{what} has no usable {table_class.tableName} table") from exc


def _triggers_of(xmldoc, coinc_event_id, sngl_table):
    """The sngl_inspiral rows that coinc_event_map ties to the candidate.

    Documents without a map (rare, hand-made) are taken to hold only the
    candidate's triggers.
    """
    try:
        map_table = lsctables.CoincMapTable.get_table(xmldoc)
    except ValueError:
        return list(sngl_table)
    event_ids = {
        _cell(row, "event_id")
        for row in map_table
        if _cell(row, "coinc_event_id") == coinc_event_id
        and _cell(row, "table_name") == lsctables.SnglInspiralTable.tableName
    }
    return [row for row in sngl_table if _cell(row, "event_id") in event_ids]


def _f_low_from_process_params(xmldoc) -> float | None:
    try:
        params = lsctables.ProcessParamsTable.get_table(xmldoc)
    except ValueError:
        return None
    for row in params:
        name = (_cell(row, "param") or "").lstrip("-").replace("_", "-").lower()
        if name not in F_LOW_PARAM_NAMES:
            continue
        try:
            value = float(_cell(row, "value"))
        except (TypeError, ValueError):
            continue
        if math.isfinite(value) and value > 0:
            return value
    return None


def _program_of(xmldoc, process_id) -> str | None:
    if process_id is None:
        return None
    try:
        processes = lsctables.ProcessTable.get_table(xmldoc)
    except ValueError:
        return None
    for row in processes:
        if _cell(row, "process_id") == process_id:
            return _cell(row, "program")
    return None


def _has_frequency_series(xmldoc) -> bool:
    return any(
        elem.hasAttribute("Name") and elem.Name == FREQUENCY_SERIES_ELEMENT_NAME
        for elem in xmldoc.getElementsByTagName(ligolw.LIGO_LW.tagName)
    )


def _coinc_row_of(xmldoc, coinc_event_id):
    if coinc_event_id is None:
        return None
    try:
        coinc_table = lsctables.CoincTable.get_table(xmldoc)
    except ValueError:
        return None
    for row in coinc_table:
        if _cell(row, "coinc_event_id") == coinc_event_id:
            return row
    return None


def _optional_float(value) -> float | None:
    return None if value is None else float(value)


def _magnitude(value, column: str, positive: bool = False) -> float:
    """``value`` as a float; a NaN, infinite or negative one is a damaged upload.

    FAR, SNRs and masses are physical magnitudes: a pipeline never writes
    -1, NaN or inf for them, and the superevent manager, p_astro and the
    classification cannot use such values (nor a zero mass).
    """
    number = float(value)
    if not math.isfinite(number) or number < 0 or (positive and number == 0):
        bound = "> 0" if positive else ">= 0"
        raise CoincError(
            f"{_COINC_FILE} has an impossible {column}: {number} "
            f"(must be a finite number {bound})"
        )
    return number


def parse_coinc(data: bytes) -> CoincSummary:
    """Summarize a pipeline's ``coinc.xml`` upload (plain or gzip bytes).

    Raises `CoincError` with a one-line reason for an empty file, corrupt
    gzip, non-XML or non-LIGO-LW content, a missing ``coinc_inspiral``
    table (or more than one candidate in it), a candidate without FAR or
    time, a negative, NaN or infinite FAR, SNR or mass (zero masses too),
    or a candidate without usable ``sngl_inspiral`` triggers.  When a
    pipeline leaves out the network SNR it is taken as the quadrature sum of
    the trigger SNRs.
    """
    return _summarize_coinc(_load_document(data, CoincError, _COINC_FILE))


def _summarize_coinc(xmldoc) -> CoincSummary:
    """`parse_coinc` of a loaded document (any loader's: the tests compare)."""
    what = _COINC_FILE
    coinc_inspirals = _single_table(
        xmldoc, lsctables.CoincInspiralTable, CoincError, what
    )
    if len(coinc_inspirals) != 1:
        raise CoincError(
            f"{what} must hold exactly one coinc_inspiral row, "
            f"found {len(coinc_inspirals)}"
        )
    (coinc_inspiral,) = coinc_inspirals
    far = _cell(coinc_inspiral, "combined_far")
    if far is None:
        raise CoincError(
            f"{what} has no FAR (coinc_inspiral.combined_far missing or empty)"
        )
    far = _magnitude(far, "coinc_inspiral.combined_far")
    end_time = _cell(coinc_inspiral, "end_time")
    if end_time is None:
        raise CoincError(
            f"{what} has no time (coinc_inspiral.end_time missing or empty)"
        )
    end_time_ns = _cell(coinc_inspiral, "end_time_ns") or 0
    end = lal.LIGOTimeGPS(int(end_time), int(end_time_ns))

    sngl_table = _single_table(xmldoc, lsctables.SnglInspiralTable, CoincError, what)
    coinc_event_id = _cell(coinc_inspiral, "coinc_event_id")
    triggers = (
        list(sngl_table)
        if coinc_event_id is None
        else _triggers_of(xmldoc, coinc_event_id, sngl_table)
    )
    if not triggers:
        raise CoincError(f"{what} has no sngl_inspiral rows for its candidate")
    detector_snrs = {_cell(row, "ifo"): _cell(row, "snr") for row in triggers}
    if None in detector_snrs or None in detector_snrs.values():
        raise CoincError(f"{what} has sngl_inspiral rows without ifo or snr")
    detector_snrs = {
        ifo: _magnitude(snr, "sngl_inspiral.snr")
        for ifo, snr in detector_snrs.items()
    }

    # All detectors of a coincidence share one template; if a pipeline ever
    # disagrees with itself, believe the loudest detector.
    template = max(triggers, key=lambda row: row.snr)
    mass1, mass2 = _cell(template, "mass1"), _cell(template, "mass2")
    if mass1 is None or mass2 is None:
        raise CoincError(f"{what} has no template masses in sngl_inspiral")
    mass1 = _magnitude(mass1, "sngl_inspiral.mass1", positive=True)
    mass2 = _magnitude(mass2, "sngl_inspiral.mass2", positive=True)

    network_snr = _cell(coinc_inspiral, "snr")
    if network_snr is None:
        network_snr = math.sqrt(sum(snr**2 for snr in detector_snrs.values()))
    network_snr = _magnitude(network_snr, "coinc_inspiral.snr")
    instruments = coinc_inspiral.instruments if _cell(coinc_inspiral, "ifos") else None
    coinc_row = _coinc_row_of(xmldoc, coinc_event_id)
    return CoincSummary(
        gpstime=float(end),
        gps_seconds=int(end.gpsSeconds),
        gps_nanoseconds=int(end.gpsNanoSeconds),
        far=far,
        snr=network_snr,
        instruments=tuple(sorted(instruments or detector_snrs)),
        detector_snrs=detector_snrs,
        mass1=mass1,
        mass2=mass2,
        spin1z=float(_cell(template, "spin1z") or 0.0),
        spin2z=float(_cell(template, "spin2z") or 0.0),
        chirp_mass=chirp_mass(mass1, mass2),
        f_low=_f_low_from_process_params(xmldoc),
        likelihood=_optional_float(_cell(coinc_row, "likelihood")),
        has_psd=_has_frequency_series(xmldoc),
        program=_program_of(xmldoc, _cell(coinc_row, "process_id")),
    )


def parse_psd(data: bytes) -> dict[str, lal.REAL8FrequencySeries]:
    """Read a ``psd.xml(.gz)`` upload into one noise spectrum per detector.

    Uses ``lal.series.read_psd_xmldoc`` over the whole document, so both the
    usual ``LIGO_LW Name="psd"`` layout and spectra embedded in a
    ``coinc.xml`` are found.  Empty spectra (a detector that was off) are
    left out.  Raises `PsdError` when nothing usable is found.
    """
    what = "PSD file"
    xmldoc = _load_document(data, PsdError, what)
    try:
        spectra = lal.series.read_psd_xmldoc(xmldoc, root_name=None)
    except _PARSE_FAILURES as exc:
        raise PsdError(f"{what} holds a malformed frequency series: {exc}") from exc
    spectra = {
        instrument: series
        for instrument, series in spectra.items()
        if instrument and series is not None
    }
    if not spectra:
        raise PsdError(f"{what} holds no per-detector noise spectrum")
    return spectra
