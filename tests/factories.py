"""Small helpers to make events in tests without pipelines' files."""
from alerts.events import create_event

# GPS 1240215503 is 2019-04-25 08:18:05 UTC.
T0 = 1240215503.0
# A CBC event's template, as a coinc.xml would give it.
CBC_TEMPLATE = {"mass1": 1.4, "mass2": 1.3, "spin1z": 0.0, "spin2z": 0.0}


def make_event(gpstime=T0, far=1e-10, snr=10.0, instruments=("H1", "L1"), group="CBC", pipeline="gstlal",
               search="AllSky", **kwargs):
    default_extra = CBC_TEMPLATE if group == "CBC" else {}
    return create_event(group=group, pipeline=pipeline, search=search,
                        attributes={"gpstime": gpstime, "far": far, "snr": snr, "instruments": list(instruments),
                                    "extra_attributes": kwargs.pop("extra_attributes", default_extra)},
                        **kwargs)
