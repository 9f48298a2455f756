"""The admin's date hierarchy, spanned from the first and last dates.

Django's own asks the database for the distinct years (months, days) of every
row of the list; at 100,000 events that is a scan of the table on each page.
Here the links are every year, month or day between the first and the last
(MIN and MAX: two index look-ups), so a link may lead to an empty page.
"""
import datetime

from django import template
from django.contrib.admin.templatetags import admin_list
from django.db.models import Max, Min
from django.utils import timezone

register = template.Library()


class SpannedDates:
    """Stands in for the list's queryset in Django's date hierarchy."""

    def __init__(self, queryset):
        self.queryset = queryset
        self._first_last = None  # the hierarchy's own MIN/MAX, asked once

    def aggregate(self, **aggregates):
        result = self.queryset.aggregate(**aggregates)
        if set(result) == {"first", "last"}:
            self._first_last = result
        return result

    def dates(self, field, kind):
        return spanned(*self._bounds(field), kind)

    datetimes = dates

    def _bounds(self, field):
        bounds = self._first_last or self.queryset.aggregate(first=Min(field), last=Max(field))
        return [_as_date(value) for value in (bounds["first"], bounds["last"])]


def _as_date(value):
    if isinstance(value, datetime.datetime):
        return (timezone.localtime(value) if timezone.is_aware(value) else value).date()
    return value


def spanned(first, last, kind):
    """Every first day of a year, month, or every day, from ``first`` to ``last``."""
    if first is None or last is None:
        return []
    if kind == "year":
        return [datetime.date(year, 1, 1) for year in range(first.year, last.year + 1)]
    if kind == "month":
        months = range(first.year * 12 + first.month - 1, last.year * 12 + last.month)
        return [datetime.date(index // 12, index % 12 + 1, 1) for index in months]
    return [first + datetime.timedelta(days=n) for n in range((last - first).days + 1)]


class _SpannedList:
    """The change list, its queryset replaced by SpannedDates."""

    def __init__(self, change_list):
        self._change_list = change_list
        self.queryset = SpannedDates(change_list.queryset)

    def __getattr__(self, name):
        return getattr(self._change_list, name)


@register.inclusion_tag("admin/date_hierarchy.html")
def spanned_date_hierarchy(change_list):
    return admin_list.date_hierarchy(_SpannedList(change_list))
