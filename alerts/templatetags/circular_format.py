"""Template filters for GCN Circular drafts (templates/circulars/).

Thin wrappers: the wording lives in :mod:`alerts.science.circular_text`.
"""
from django import template

from alerts.science import circular_text

register = template.Library()


@register.filter
def far_human(far_hz):
    """1e-10 -> 'about one in 320 years'."""
    return circular_text.far_to_human(far_hz)


@register.filter
def utc(gps_seconds):
    return circular_text.gps_to_utc_text(gps_seconds)


@register.filter
def percent(probability):
    return circular_text.percent_text(probability)


@register.filter
def deg2(area):
    return circular_text.area_text(area)


@register.filter
def join_words(words, conjunction="and"):
    return circular_text.join_words(words, conjunction)
